"""The replicator's domain: peers and their workers, status, failures and sync.

Every replica runs a worker per peer; the workers of all replicas share each peer's durable
consumer, so the work is split. Peers live in KV: a change made through any replica reaches the
others at their next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import aiohttp
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from nimbus import streams
from nimbus.kvbucket import open_bucket
from nimbus.oci.client import RegistryClient
from nimbus.oci.errors import RegistryError
from nimbus.oci.transport import Credentials, ssl_context
from replicator.config import ReplicatorConfig
from replicator.errors import FailureNotFound, InvalidRequest
from replicator.failures import Failure, FailureStore
from replicator.metrics import ReplicatorMetrics
from replicator.peers import NAME_RE, Peer, PeerNotFoundError, PeerStore
from replicator.retries import retry_failures_forever
from replicator.rules import RuleAction, first_match
from replicator.status import PeerCounters, StatusBoard
from replicator.sync import ReconcileLease, SyncProgress, reconcile_forever, sync
from replicator.worker import Change, PeerWorker, backlog, delete_consumer, ensure_consumer

log = logging.getLogger("nimbus.replicator")

# How often a replica looks for peers created, changed or deleted through another replica.
REFRESH_SECONDS = 2.0
# The fields of a peer an update may change (its name and creation time stay).
CREDENTIALS = frozenset({"username", "password", "token"})
# Secret like the credentials: never shown, so kept unless replaced on purpose.
CLIENT_KEY = "client_key_pem"
UPDATABLE = frozenset(
    {"url", "site", "tls_verify", "ca_pem", "client_cert_pem", "reconcile_interval", "rules"}
    | CREDENTIALS
    | {CLIENT_KEY}
)


@dataclass
class PeerStatus:
    peer: str
    backlog: int
    in_flight: int
    counters: PeerCounters
    failures: int


@dataclass
class Presence:
    """A manifest at one peer."""

    peer: str
    selected: bool
    present: bool
    digest: str = ""
    error: str = ""


# Seconds a peer has to answer LocateManifest's HEAD.
LOCATE_TIMEOUT = 10.0


@dataclass
class RetryOutcome:
    retried: int
    succeeded: int
    still_failing: list[Failure]


class ReplicationService:
    def __init__(
        self,
        config: ReplicatorConfig,
        js: JetStreamContext,
        peers: PeerStore,
        failures: FailureStore,
        status: StatusBoard,
        lease: ReconcileLease,
        metrics: ReplicatorMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or ReplicatorMetrics()
        self.site = config.site
        self.js = js
        self.peers = peers
        self.failures = failures
        self.status = status
        self.lease = lease
        src = config.source
        self.source = RegistryClient(
            src.url,
            Credentials(src.username, src.password, src.token),
            ssl=ssl_context(src.tls_verify, src.tls_ca),
        )
        self._workers: dict[str, tuple[bytes, PeerWorker, list[asyncio.Task[None]]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        config: ReplicatorConfig,
        js: JetStreamContext,
        metrics: ReplicatorMetrics | None = None,
    ) -> ReplicationService:
        replicas = config.kv_replicas
        status = await StatusBoard.open(js, config.site, config.instance, replicas)
        lease = ReconcileLease(status.kv, config.instance)
        return cls(
            config,
            js,
            await PeerStore.open(js, config.site, replicas),
            await FailureStore.open(js, config.site, replicas),
            status,
            lease,
            metrics,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        self._tasks = [
            asyncio.create_task(self._refresh_forever()),
            asyncio.create_task(self.status.run()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name in list(self._workers):
            await self._stop_worker(name)
        with contextlib.suppress(Exception):
            await self.status.flush()
        await self.source.close()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception as error:  # NATS away: keep the workers we have
                log.warning("cannot refresh peers", extra={"error": repr(error)})

    async def refresh(self) -> None:
        """Start, restart or stop workers to match the peers bucket."""
        async with self._refresh_lock:
            wanted = {peer.name: peer for peer in await self.peers.list()}
            for name in set(self._workers) - set(wanted):
                # A listing can miss a key (the bucket's watch under load): a worker stops only
                # once its peer is read to be gone.
                with contextlib.suppress(PeerNotFoundError):
                    wanted[name] = await self.peers.get(name)
            for name in list(self._workers):
                if name not in wanted or self._workers[name][0] != wanted[name].to_json():
                    await self._stop_worker(name)
            for name, peer in wanted.items():
                if name not in self._workers:
                    self._start_worker(peer)

    def _start_worker(self, peer: Peer) -> None:
        worker = PeerWorker(
            peer,
            site=self.site,
            js=self.js,
            source=self.source,
            failures=self.failures,
            status=self.status,
            settings=self.config.worker_settings,
            metrics=self.metrics,
        )
        worker.start()
        loops: list[asyncio.Task[None]] = []
        if peer.reconcile_interval > 0:
            loops.append(asyncio.create_task(reconcile_forever(worker, self.lease)))
        if worker.settings.failure_retry_interval > 0:
            loops.append(asyncio.create_task(retry_failures_forever(worker, self.lease)))
        self._workers[peer.name] = (peer.to_json(), worker, loops)

    async def _stop_worker(self, name: str) -> None:
        _, worker, loops = self._workers.pop(name)
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await worker.stop()

    async def worker(self, name: str) -> PeerWorker:
        # After any refresh in progress: a worker being restarted is never "not found".
        async with self._refresh_lock:
            entry = self._workers.get(name)
        if entry is None:
            raise PeerNotFoundError(name)
        return entry[1]

    # -- peers --------------------------------------------------------------------------

    async def create_peer(self, peer: Peer) -> Peer:
        peer.validate()
        peer.created_at = time.time()
        created = await self.peers.create(peer)
        try:
            # Now rather than when a worker gets to it; without a stream yet (no registry has
            # started), the worker makes it later, from the same start time.
            await ensure_consumer(self.js, self.site, created, self.config.worker_settings)
        except NotFoundError:
            log.info("no event stream yet", extra={"peer": peer.name})
        await self.refresh()
        return created

    async def _peer(self, name: str) -> Peer:
        if not NAME_RE.match(name):
            raise PeerNotFoundError(name)  # nor a key the bucket could hold
        return await self.peers.get(name)

    async def get_peer(self, name: str) -> Peer:
        return await self._peer(name)

    async def list_peers(self) -> list[Peer]:
        return await self.peers.list()

    async def update_peer(self, name: str, draft: Peer, fields: Sequence[str] = ()) -> Peer:
        """Change the ``fields`` of peer ``name`` to those of ``draft``; every field when none
        are named, save the credentials, replaced then only when ``draft`` has some (a peer as
        read never shows its secrets, so writing one back must not erase them)."""
        unknown = sorted(set(fields) - UPDATABLE)
        if unknown:
            raise InvalidRequest(f"cannot update {', '.join(unknown)}")
        current = await self._peer(name)
        chosen = set(fields)
        if not fields:
            chosen = set(UPDATABLE - CREDENTIALS - {CLIENT_KEY})
            if draft.username or draft.password or draft.token:
                chosen |= CREDENTIALS
            if draft.client_key_pem:
                chosen.add(CLIENT_KEY)
        updated = replace(current, **{f: getattr(draft, f) for f in chosen})
        if not updated.client_cert_pem and CLIENT_KEY not in chosen:
            updated.client_key_pem = ""  # no certificate, no key
        updated = await self.peers.put(updated)
        await self.refresh()
        return updated

    async def delete_peer(self, name: str) -> None:
        await self._peer(name)  # a name no peer can have is not a key to ask NATS for
        await self.peers.delete(name)
        await self.refresh()
        await delete_consumer(self.js, self.site, name)
        await self.failures.drop_peer(name)
        await self.status.drop_peer(name)
        self.metrics.forget(name)

    # -- status and failures ------------------------------------------------------------

    async def get_status(self, name: str = "") -> list[PeerStatus]:
        names = [name] if name else [peer.name for peer in await self.peers.list()]
        if name:
            await self._peer(name)
        failures = await self.failures.list()
        found = []
        for peer in names:
            pending, unacked = await backlog(self.js, self.site, peer)
            found.append(
                PeerStatus(
                    peer=peer,
                    backlog=pending,
                    in_flight=unacked,
                    counters=await self.status.totals(peer),
                    failures=sum(1 for f in failures if f.peer == peer),
                )
            )
        return found

    async def refresh_metrics(self) -> None:
        """The gauges read when scraped: each peer's backlog in its consumer."""
        names = list(self._workers)
        found = await asyncio.gather(*(backlog(self.js, self.site, name) for name in names))
        for name, (pending, unacked) in zip(names, found, strict=True):
            self.metrics.peer_backlog(name, pending, unacked)

    async def list_failures(self, peer: str = "") -> list[Failure]:
        if peer:
            await self._peer(peer)
        return await self.failures.list(peer)

    async def locate(self, repository: str, reference: str) -> list[Presence]:
        """A HEAD of the manifest at every peer, at once; a peer that cannot say says why."""
        if not repository or not reference:
            raise InvalidRequest("repository and reference are both needed")
        await self.refresh()
        tag = "" if ":" in reference else reference
        peers = sorted(await self.peers.list(), key=lambda p: p.name)

        async def one(peer: Peer) -> Presence:
            selected = first_match(peer.rules, repository, tag, RuleAction.PUSH) is not None
            try:
                worker = await self.worker(peer.name)
                head = await asyncio.wait_for(
                    worker.client.head_manifest(repository, reference), LOCATE_TIMEOUT
                )
            except (PeerNotFoundError, TimeoutError) as error:
                reason = "no answer in time" if isinstance(error, TimeoutError) else "not started"
                return Presence(peer.name, selected, False, error=reason)
            except (RegistryError, aiohttp.ClientError, OSError) as error:
                # The peer refused or is away: this peer says so, the others still answer.
                return Presence(peer.name, selected, False, error=str(error) or repr(error))
            if head is None:
                return Presence(peer.name, selected, False)
            return Presence(peer.name, selected, True, digest=head.digest)

        return list(await asyncio.gather(*(one(peer) for peer in peers)))

    async def retry_failures(self, peer: str, failure_id: str = "") -> RetryOutcome:
        """Apply failed changes again now (a few tries each); successes clear their record."""
        await self._peer(peer)
        await self.refresh()
        worker = await self.worker(peer)
        if failure_id:
            one = await self.failures.get(peer, failure_id)
            if one is None:
                raise FailureNotFound(f"no failure {failure_id!r} for peer {peer!r}")
            todo = [one]
        else:
            todo = await self.failures.list(peer)
        outcome = RetryOutcome(0, 0, [])
        for failure in todo:
            outcome.retried += 1
            tag = "" if ":" in failure.reference else failure.reference
            change = Change(failure.action, failure.repository, failure.digest, tag, self.site)
            try:
                await worker.apply(change, attempts=2)
                await self.failures.remove(peer, failure.id)
                outcome.succeeded += 1
            except Exception as error:
                outcome.still_failing.append(await worker.fail(change, error))
        return outcome

    async def sync(self, peer: str, repository: str = "") -> AsyncIterator[SyncProgress]:
        await self._peer(peer)
        await self.refresh()
        worker = await self.worker(peer)
        async for progress in sync(worker, repository, self.config.worker.sync_concurrency):
            yield progress


async def open_service(
    config: ReplicatorConfig, js: JetStreamContext, metrics: ReplicatorMetrics | None = None
) -> ReplicationService:
    # Buckets are made on first use by whichever replica starts first.
    await open_bucket(
        js, streams.site_bucket(streams.PEERS_BUCKET, config.site), replicas=config.kv_replicas
    )
    return await ReplicationService.open(config, js, metrics)
