"""Consuming events for one peer: a durable pull consumer per peer, shared by every replica.

Each peer has its own consumer, so a slow or dead peer only builds its own backlog. Events of one
repository are applied in stream order (one lane per repository), different repositories in
parallel. A message is acked once its change is at the peer; transient errors are retried with
exponential backoff and jitter (honouring Retry-After) while the message is kept alive with
progress acks: without end while the peer is unreachable (its backlog builds, in order), a few
times when it answers with a server error (one image the peer cannot take must not hold back
its repository's lane, and with it the peer's in-flight window, for good). Errors that stay
become failure records and the message is acked; records other than refusals are tried again
later by themselves (`replicator.retries`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from nimbus import otel, streams, tracing
from nimbus.events import MANIFEST, Action, UndecodableEvent, decode
from nimbus.lanes import LaneConsumer, LaneHandler, LaneSettings, Unreadable
from nimbus.oci import mediatypes as mt
from nimbus.oci.client import RegistryClient
from nimbus.oci.documents import InvalidManifestError
from nimbus.oci.errors import (
    ClientCertificateRequiredError,
    DigestMismatchError,
    RegistryError,
    SizeMismatchError,
    is_transient,
)
from nimbus.oci.headers import ORIGIN_SITE_HEADER
from proto.nimbus.v1 import events_pb2
from replicator.copier import DEFAULT_CHUNK_SIZE, Copier, CopyResult, MountHints, SourceMissingError
from replicator.failures import Failure, FailureKind, FailureStore
from replicator.metrics import COPIED, DELETED, PRESENT, ReplicatorMetrics
from replicator.peers import Peer
from replicator.rules import RuleAction, first_match
from replicator.status import StatusBoard

log = logging.getLogger("nimbus.replicator.worker")

# JetStream's error code for a missing stream (a missing consumer is 10014).
STREAM_NOT_FOUND = 10059
# Retry-After is honoured up to this many seconds.
RETRY_AFTER_MAX = 600.0


class TagDeleteUnsupportedError(Exception):
    """The peer cannot delete a tag alone (the spec lets registries refuse)."""


# Answers that retrying will not change: the change fails for good, and the peer goes on.
REFUSALS = (
    RegistryError,
    ClientCertificateRequiredError,
    DigestMismatchError,
    SizeMismatchError,
    InvalidManifestError,
    TagDeleteUnsupportedError,
)


# Server errors that mean "away" (a gateway without its backend, overloaded, timed out): waited
# for like a connection error. Any other 5xx is an answer about this change.
_AWAY = frozenset({502, 503, 504})


def answered_error(error: BaseException | None) -> bool:
    """A server error answer (500, 501, 505 and up): tried a few times, then recorded."""
    return isinstance(error, RegistryError) and error.status >= 500 and error.status not in _AWAY


class LeakedCancellationError(Exception):
    """A copy ended in a cancellation that was not its own (one raised in another task)."""


def failure_kind(error: BaseException) -> FailureKind:
    """Who is to blame: a registry's answer, an unreachable peer, or the replicator itself."""
    if is_transient(error):
        return FailureKind.PEER_UNREACHABLE
    if isinstance(error, REFUSALS):
        return FailureKind.PEER_REFUSED
    return FailureKind.INTERNAL


@dataclass(frozen=True)
class WorkerSettings:
    ack_wait: float = 30.0
    # Events held at once per peer (being copied or waiting behind their repository's lane).
    max_in_flight: int = 32
    chunk_size: int = DEFAULT_CHUNK_SIZE
    blob_concurrency: int = 4
    retry_initial: float = 0.5
    retry_max: float = 30.0
    fetch_timeout: float = 2.0
    # Tries of an event whose change fails inside the replicator before it is given up.
    job_attempts: int = 3
    # Tries of an event whose peer answers a server error before it becomes a failure record.
    error_attempts: int = 8
    # Seconds between automatic tries of the peer's failure records (0: off).
    failure_retry_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class Change:
    """What one event asks of a peer."""

    action: str
    repository: str
    digest: str
    tag: str = ""
    origin_site: str = ""
    # When its event happened (epoch seconds); 0 for changes of a sync or a retry.
    happened: float = field(default=0.0, compare=False)
    # The event's trace (W3C traceparent), continued by the copy; "" for a sync or a retry.
    traceparent: str = field(default="", compare=False)

    @property
    def lag(self) -> float | None:
        """Seconds from the event to now, for a change that came from one."""
        return time.time() - self.happened if self.happened else None

    @property
    def reference(self) -> str:
        return self.tag or self.digest

    def describe(self) -> str:
        return f"{self.action} {self.repository}:{self.reference}"


def change_of(event: events_pb2.Event) -> Change | None:
    """The change an event carries, or None for what a peer needs not hear (blobs, pulls)."""
    target = event.target
    if event.action == Action.PUSH:
        if target.kind != MANIFEST or target.media_type not in mt.MANIFESTS:
            return None  # blob uploads come along with the manifest that references them
    elif event.action != Action.DELETE:
        return None  # pulls and mounts change nothing worth copying
    if not target.repository or not (target.digest or target.tag):
        return None
    return Change(
        action=event.action,
        repository=target.repository,
        digest=target.digest,
        tag=target.tag,
        origin_site=event.source.origin_site or event.source.site,
        happened=event.timestamp.ToMicroseconds() / 1e6 if event.HasField("timestamp") else 0.0,
        traceparent=event.traceparent,
    )


class PeerWorker(LaneHandler[Change]):
    """Applies changes to one peer: from its consumer, and on demand (sync, retry)."""

    def __init__(
        self,
        peer: Peer,
        *,
        site: str,
        js: JetStreamContext,
        source: RegistryClient,
        failures: FailureStore,
        status: StatusBoard,
        settings: WorkerSettings,
        metrics: ReplicatorMetrics | None = None,
    ) -> None:
        self.peer = peer
        self.metrics = metrics or ReplicatorMetrics()
        self.site = site
        self.js = js
        self.source = source
        self.failures = failures
        self.status = status
        self.settings = settings
        self.client = peer.client()
        self.copier = Copier(
            source,
            self.client,
            chunk_size=settings.chunk_size,
            blob_concurrency=settings.blob_concurrency,
            hints=MountHints(),
        )
        lanes = LaneSettings(
            ack_wait=settings.ack_wait,
            max_in_flight=settings.max_in_flight,
            fetch_batch=settings.max_in_flight,
            fetch_wait=settings.fetch_timeout,
            attempts=settings.job_attempts,
            retry_initial=settings.retry_initial,
            retry_max=settings.retry_max,
        )
        self._consumer = LaneConsumer(self, lanes, log, {"peer": peer.name})
        self._main: asyncio.Task[None] | None = None

    @property
    def consumer(self) -> str:
        return streams.replicator_consumer(self.site, self.peer.name)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name=f"peer-{self.peer.name}")
        self._main.add_done_callback(self._main_done)

    def _main_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "peer worker failed", exc_info=task.exception(), extra={"peer": self.peer.name}
            )

    async def stop(self) -> None:
        """Stop consuming; unfinished events go to another replica now, not after ack_wait."""
        if self._main is not None:
            self._main.cancel()
            await asyncio.gather(self._main, return_exceptions=True)
        await self.client.close()

    async def _run(self) -> None:
        while True:
            try:
                await ensure_consumer(self.js, self.site, self.peer, self.settings)
                sub = await self.js.pull_subscribe_bind(
                    durable=self.consumer, stream=streams.EVENTS_STREAM
                )
                break
            except asyncio.CancelledError:
                raise
            except Exception as error:  # stream not created yet, NATS away
                log.warning(
                    "cannot bind the peer's consumer yet",
                    extra={"peer": self.peer.name, "error": repr(error)},
                )
                await asyncio.sleep(2)
        log.info("peer worker started", extra={"peer": self.peer.name, "consumer": self.consumer})
        try:
            await self._consumer.run(sub)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # -- the lane handler: one lane per repository ----------------------------------------

    def route(self, msg: Msg) -> list[tuple[Hashable, Change]]:
        try:
            event = decode(msg.data)
        except UndecodableEvent as error:
            raise Unreadable(str(error)) from None
        change = change_of(event)
        if change is None or not self.wants(change):
            return []
        self.status.in_flight(self.peer.name, 1)
        return [(change.repository, change)]

    def settled(self, change: Change) -> None:
        self.status.in_flight(self.peer.name, -1)

    def describe(self, change: Change) -> dict[str, str]:
        return {"peer": self.peer.name, "change": change.describe()}

    async def handle(self, change: Change) -> None:
        """Apply one event's change: a peer's refusal becomes a failure record; anything else
        that goes wrong is the consumer's to try again and, in the end, give up."""
        try:
            await self.apply(change)
        except SourceMissingError as error:
            # Gone from the source since (deleted): the delete's own event says what to do.
            log.info("nothing to copy", extra={"peer": self.peer.name, "reason": str(error)})
        except REFUSALS as error:
            # A server error answered through every try is recorded (and tried again later).
            await self.fail(change, error)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Not this lane being stopped: an error of this change, or the lane would end
            # without settling its messages (and keep them from every replica for good).
            raise LeakedCancellationError(f"{change.describe()}: cancelled from within") from None

    async def give_up(self, change: Change, error: Exception) -> None:
        # The consumer logged the traceback; the record says where to look.
        await self._record(change, error, FailureKind.INTERNAL)

    # -- applying changes ---------------------------------------------------------------

    def wants(self, change: Change) -> bool:
        """Whether a change goes to this peer: not back where it came from, and a rule says so."""
        if self.peer.site and change.origin_site == self.peer.site:
            return False
        return (
            first_match(self.peer.rules, change.repository, change.tag, change.action) is not None
        )

    async def apply(self, change: Change, attempts: int | None = None) -> CopyResult:
        """Apply with retries of transient errors (forever unless ``attempts`` is given)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=self._wait,
            stop=stop_after_attempt(attempts) if attempts else self._stop_on_answers(),
            before_sleep=self._before_sleep(change),
            reraise=True,
        )
        result = CopyResult()
        async for attempt in retrying:
            with attempt:
                result = await self._apply_once(change)
        await self.failures.clear(
            self.peer.name, change.repository, change.reference, change.action
        )
        return result

    async def _apply_once(self, change: Change) -> CopyResult:
        # This copy's span, a child of the push's (none for a sync or a retry); an OTel span
        # too when OTel is configured.
        with otel.copy_span(change.traceparent, self.peer.name, change.repository) as span:
            return await self._apply_traced(change, span.traceparent)

    async def _apply_traced(self, change: Change, trace: str) -> CopyResult:
        origin = change.origin_site or self.site
        if change.action == RuleAction.DELETE:
            headers = {ORIGIN_SITE_HEADER: origin, **({tracing.HEADER: trace} if trace else {})}
            target = self.client.with_headers(headers)
            try:
                await target.delete_manifest(change.repository, change.reference)
            except RegistryError as error:
                if change.tag and error.status in (400, 405) and not error.transient:
                    # Distribution 2.x, for one, deletes manifests only by digest.
                    raise TagDeleteUnsupportedError(
                        f"the peer refused to delete tag {change.tag} ({error}); deleting the "
                        "manifest instead would remove more than the source did"
                    ) from None
                raise
            self.status.deleted(self.peer.name, change.describe(), change.lag)
            self.metrics.applied(self.peer.name, DELETED, lag=change.lag)
            return CopyResult(digest=change.digest)
        result = await self.copier.copy(
            change.repository,
            change.digest or change.tag,
            tag=change.tag,
            origin_site=origin,
            traceparent=trace,
        )
        images = 1 if result.manifests_copied or result.tagged else 0
        self.status.success(
            self.peer.name, change.describe(), images, result.bytes_copied, change.lag
        )
        self.metrics.applied(
            self.peer.name, COPIED if images else PRESENT, result.bytes_copied, change.lag
        )
        log.info(
            "replicated",
            extra={
                "peer": self.peer.name,
                "change": change.describe(),
                "digest": result.digest,
                "bytes": result.bytes_copied,
                "manifests": result.manifests_copied,
            },
        )
        return result

    async def fail(self, change: Change, error: BaseException) -> Failure:
        """Record a change that failed for good; a fault of ours is logged with its traceback."""
        kind = failure_kind(error)
        fields = {"peer": self.peer.name, "change": change.describe(), "kind": kind.value}
        if kind is FailureKind.INTERNAL:
            log.error("replication failed: internal error", exc_info=error, extra=fields)
        else:
            log.warning("replication failed", extra={**fields, "reason": str(error)})
        return await self._record(change, error, kind)

    async def _record(self, change: Change, error: BaseException, kind: FailureKind) -> Failure:
        reason = str(error) or repr(error)
        if kind is FailureKind.INTERNAL:
            reason = f"internal error: {type(error).__name__}: {reason}"
        self.status.error(self.peer.name, f"{change.describe()}: {reason}")
        self.metrics.failed(self.peer.name, kind.value)
        return await self.failures.record(
            Failure(
                peer=self.peer.name,
                repository=change.repository,
                reference=change.reference,
                digest=change.digest,
                action=change.action,
                reason=reason,
                kind=kind.value,
            )
        )

    def _stop_on_answers(self) -> Callable[[RetryCallState], bool]:
        """Never while the peer is unreachable; after `error_attempts` server error answers."""
        answers = 0

        def stop(state: RetryCallState) -> bool:
            nonlocal answers
            if answered_error(state.outcome.exception() if state.outcome else None):
                answers += 1
            return answers >= self.settings.error_attempts

        return stop

    async def retry_failure(self, failure: Failure) -> Failure | None:
        """Try a recorded change again, as the source is now: None once it is done (the record
        is removed), else the record updated with this try's error.

        A push copies what its tag points at now (not the digest of back then, which a later
        push may have replaced at the peer already); a delete of something pushed again since
        is superseded by that push."""
        tag = "" if ":" in failure.reference else failure.reference
        if failure.action == RuleAction.DELETE:
            if await self.source.head_manifest(failure.repository, failure.reference) is not None:
                await self.failures.remove(self.peer.name, failure.id)
                return None
            change = Change(failure.action, failure.repository, failure.digest, tag, self.site)
        else:
            digest = "" if tag else failure.digest
            change = Change(failure.action, failure.repository, digest, tag, self.site)
        try:
            await self.apply(change, attempts=2)
        except SourceMissingError:
            pass  # deleted at the source since: its delete's event says what to do
        except Exception as error:
            return await self.fail(change, error)
        await self.failures.remove(self.peer.name, failure.id)
        return None

    def _wait(self, state: RetryCallState) -> float:
        base = wait_exponential_jitter(
            initial=self.settings.retry_initial, max=self.settings.retry_max
        )(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RegistryError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), RETRY_AFTER_MAX)
        return float(base)

    def _before_sleep(self, change: Change) -> Callable[[RetryCallState], Any]:
        def note(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            reason = f"{change.describe()}: {error!r} (attempt {state.attempt_number}, retrying)"
            self.status.error(self.peer.name, reason)
            self.metrics.retried(self.peer.name)
            if state.attempt_number in (1, 5) or state.attempt_number % 20 == 0:
                log.warning(
                    "peer unreachable or busy, retrying",
                    extra={
                        "peer": self.peer.name,
                        "change": change.describe(),
                        "error": repr(error),
                    },
                )

        return note


async def ensure_consumer(
    js: JetStreamContext, site: str, peer: Peer, settings: WorkerSettings
) -> None:
    """The peer's durable consumer, created on first need. It starts at the events published
    since the peer was added, even when it is made later (the stream did not exist yet): what
    came before is Sync's work, not a replay of the stream's history."""
    name = streams.replicator_consumer(site, peer.name)
    try:
        await js.consumer_info(streams.EVENTS_STREAM, name)
        return
    except NotFoundError as error:
        if error.err_code == STREAM_NOT_FOUND:
            raise
    since = datetime.fromtimestamp(peer.created_at or time.time(), UTC)
    await js.add_consumer(
        streams.EVENTS_STREAM,
        ConsumerConfig(
            durable_name=name,
            filter_subject=streams.site_subjects(site),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since,
            ack_wait=settings.ack_wait,
            max_deliver=-1,
            max_ack_pending=max(1000, settings.max_in_flight * 4),
        ),
    )


async def delete_consumer(js: JetStreamContext, site: str, peer: str) -> None:
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(streams.EVENTS_STREAM, streams.replicator_consumer(site, peer))


async def backlog(js: JetStreamContext, site: str, peer: str) -> tuple[int, int]:
    """Events not yet delivered and events delivered but not acked, for one peer."""
    try:
        info = await js.consumer_info(
            streams.EVENTS_STREAM, streams.replicator_consumer(site, peer)
        )
    except NotFoundError:
        return 0, 0
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)
