"""Sync: reconcile a peer (or one repository) with this site by listing what is here.

The backfill for a new peer or after a long outage, and the periodic reconcile that catches
whatever an event could not carry. Listing is by catalog and tags; each selected tag is copied
unless the peer has it already (the copy engine skips what is present), a few at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from replicator.copier import SourceMissingError
from replicator.metrics import RECONCILE_FAILED, RECONCILED
from replicator.rules import DEFAULT_RULES, RuleAction, first_match
from replicator.worker import Change, PeerWorker

log = logging.getLogger("nimbus.replicator.sync")

# Tries per tag before it becomes a failure record (transient errors included).
SYNC_ATTEMPTS = 3


@dataclass(frozen=True)
class SyncProgress:
    phase: str = "listing"
    repository: str = ""
    reference: str = ""
    done: int = 0
    total: int = 0
    images_copied: int = 0
    bytes_copied: int = 0
    failed: int = 0
    error: str = ""
    finished: bool = False


async def plan(worker: PeerWorker, repository: str = "") -> list[tuple[str, str]]:
    """(repository, tag) pairs this site has and the peer's rules select for pushing."""
    rules = worker.peer.rules or list(DEFAULT_RULES)
    if repository:
        repositories = [repository]
    else:
        repositories = [
            name
            for name in await worker.source.catalog()
            if any(r.enabled and r.matches_repository(name) for r in rules)
        ]
    items: list[tuple[str, str]] = []
    for name in repositories:
        for tag in sorted(await worker.source.list_tags(name)):
            if first_match(worker.peer.rules, name, tag, RuleAction.PUSH) is not None:
                items.append((name, tag))
    return items


async def sync(
    worker: PeerWorker, repository: str = "", concurrency: int = 4
) -> AsyncIterator[SyncProgress]:
    """Copy every selected tag to the peer, yielding progress after each."""
    progress = SyncProgress()
    yield progress
    items = await plan(worker, repository)
    progress = replace(progress, phase="copying", total=len(items))
    yield progress
    pending = list(reversed(items))
    results: asyncio.Queue[tuple[str, str, int, int, str]] = asyncio.Queue()

    async def copy_some() -> None:
        while pending:
            name, tag = pending.pop()
            change = Change(RuleAction.PUSH, name, "", tag, worker.site)
            try:
                result = await worker.apply(change, attempts=SYNC_ATTEMPTS)
                copied = 1 if result.manifests_copied or result.tagged else 0
                await results.put((name, tag, copied, result.bytes_copied, ""))
            except SourceMissingError:
                await results.put((name, tag, 0, 0, ""))  # deleted while we were listing
            except Exception as error:
                await worker.fail(change, error)
                await results.put((name, tag, 0, 0, str(error) or repr(error)))

    workers = [asyncio.create_task(copy_some()) for _ in range(max(1, concurrency))]
    try:
        for _ in items:
            name, tag, copied, bytes_, error = await results.get()
            progress = replace(
                progress,
                repository=name,
                reference=tag,
                done=progress.done + 1,
                images_copied=progress.images_copied + copied,
                bytes_copied=progress.bytes_copied + bytes_,
                failed=progress.failed + (1 if error else 0),
                error=error,
            )
            yield progress
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    yield replace(progress, phase="done", repository="", reference="", error="", finished=True)


class ReconcileLease:
    """One replica reconciles a peer per interval: a KV key claimed by compare-and-set."""

    def __init__(self, kv: KeyValue, replica: str) -> None:
        self.kv = kv
        self.replica = replica

    async def claim(self, peer: str, seconds: float) -> bool:
        key = f"_lease.{peer}"
        value = json.dumps({"replica": self.replica, "until": time.time() + seconds}).encode()
        try:
            await self.kv.create(key, value)
            return True
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return False
        held = json.loads(entry.value or b"{}")
        if float(held.get("until", 0)) > time.time():
            return False
        try:
            await self.kv.update(key, value, last=entry.revision)
            return True
        except KeyWrongLastSequenceError:
            return False  # another replica got it first


async def reconcile_forever(worker: PeerWorker, lease: ReconcileLease) -> None:
    """Every `reconcile_interval` seconds, one replica syncs the peer."""
    interval = worker.peer.reconcile_interval
    while interval > 0:
        await asyncio.sleep(interval)
        try:
            if not await lease.claim(worker.peer.name, interval * 0.9):
                continue
            last = SyncProgress()
            async for progress in sync(worker):
                last = progress
            log.info(
                "reconciled",
                extra={
                    "peer": worker.peer.name,
                    "tags": last.total,
                    "copied": last.images_copied,
                    "failed": last.failed,
                },
            )
            worker.metrics.reconciled(worker.peer.name, RECONCILED)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            worker.metrics.reconciled(worker.peer.name, RECONCILE_FAILED)
            log.warning("reconcile failed", extra={"peer": worker.peer.name, "error": repr(error)})
