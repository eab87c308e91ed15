"""Failure records tried again by themselves: what failed while a peer answered errors (or the
replicator itself was at fault) reaches the peer once it takes it, without an operator.

Every `failure_retry_interval` seconds one replica (a lease, as for reconcile) tries each of the
peer's records that is not a refusal; a refusal (401, 404, a digest mismatch) stays until the
operator fixes its cause and asks (RetryFailure).
"""

from __future__ import annotations

import asyncio
import logging

from replicator.failures import FailureKind
from replicator.sync import ReconcileLease
from replicator.worker import PeerWorker

log = logging.getLogger("nimbus.replicator.retries")

RETRIED_KINDS = frozenset({FailureKind.PEER_UNREACHABLE.value, FailureKind.INTERNAL.value})


async def retry_failures_once(worker: PeerWorker) -> tuple[int, int]:
    """Try the peer's retriable records once each: (tried, still failing)."""
    tried = failing = 0
    for failure in await worker.failures.list(worker.peer.name):
        if failure.kind not in RETRIED_KINDS:
            continue
        tried += 1
        if await worker.retry_failure(failure) is not None:
            failing += 1
    return tried, failing


async def retry_failures_forever(worker: PeerWorker, lease: ReconcileLease) -> None:
    interval = worker.settings.failure_retry_interval
    while interval > 0:
        await asyncio.sleep(interval)
        try:
            if not await lease.claim(f"{worker.peer.name}.retries", interval * 0.9):
                continue
            tried, failing = await retry_failures_once(worker)
            if tried:
                log.info(
                    "failures retried",
                    extra={"peer": worker.peer.name, "tried": tried, "failing": failing},
                )
        except asyncio.CancelledError:
            raise
        except Exception as error:  # NATS away: the next round tries again
            log.warning(
                "retrying failures failed", extra={"peer": worker.peer.name, "error": repr(error)}
            )
