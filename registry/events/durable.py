"""The registry's event sink with the delivery guarantee.

`emit` returns only once the event cannot be lost: JetStream acknowledged it within the
publish timeout, or it is fsynced in the outbox. While the outbox holds anything, new events go
behind it, so the stream sees events in the order the registry acknowledged the requests. A
background task flushes the outbox head first whenever NATS is reachable; the event id as
`Nats-Msg-Id` makes a copy published twice (ack lost, crash before the entry was removed) land
once.

An outbox whose worker no longer runs (the worker count was reduced, or the worker died) is
adopted: while NATS is reachable each sink looks every ADOPT_INTERVAL for sibling outboxes
nobody holds the lock of, takes the lock, publishes what they hold and lets go.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from nimbus import otel
from nimbus.config import ConfigError
from nimbus.events import UndecodableEvent, decode
from proto.nimbus.v1 import events_pb2
from registry.events.outbox import Outbox, OutboxEntryError, OutboxLocked
from registry.events.publisher import JetStreamPublisher
from registry.events.schema import EventSource, subject_of, to_proto
from registry.events.sink import RegistryEvent
from registry.metrics import RegistryMetrics

log = logging.getLogger("nimbus.events")

# Flushing has no client waiting on it, so it can wait longer for each ack.
MIN_FLUSH_TIMEOUT = 2.0
# How often the flusher looks again while NATS stays away.
RETRY_INTERVAL = 1.0
MAX_BACKOFF = 5.0
# How often a sink looks for outboxes of workers that no longer run.
ADOPT_INTERVAL = 10.0
# How long a starting worker waits for a sink adopting its outbox to let go of it.
LOCK_WAIT = 30.0


class DurableSink:
    def __init__(
        self,
        publisher: JetStreamPublisher,
        outbox: Outbox,
        source: EventSource,
        metrics: RegistryMetrics,
        publish_timeout: float,
    ) -> None:
        self.publisher = publisher
        self.outbox = outbox
        self.source = source
        self.metrics = metrics
        self.publish_timeout = publish_timeout
        self.flush_timeout = max(publish_timeout, MIN_FLUSH_TIMEOUT)
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._logged_depth = 0
        self._failures = 0
        self._retry_at = 0.0
        self._adopt_at = 0.0

    async def _open_outbox(self) -> None:
        # Another worker may hold it for a moment, adopting what a previous run left.
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                await self.outbox.open()
                return
            except OutboxLocked:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def start(self, connect_wait: float = 2.0) -> None:
        """Load the outbox, start flushing, and give NATS a moment to answer first."""
        try:
            await self._open_outbox()
        except OutboxLocked as exc:
            raise ConfigError(
                f"events.outbox_dir: {exc}; each registry process needs an outbox of its own"
            ) from None
        self._depth_changed()
        if self.outbox.depth:
            log.warning(
                "events left in the outbox by a previous run", extra={"depth": self.outbox.depth}
            )
        self.publisher.on_ready = self._nats_ready
        self.publisher.start()
        self._flusher = asyncio.create_task(self._flush_loop(), name="outbox-flusher")
        try:
            await asyncio.wait_for(self.publisher.connected_once.wait(), connect_wait)
        except TimeoutError:
            log.warning("NATS not reachable yet; events go to the outbox until it is")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
        await self.publisher.close()
        await self.outbox.close()

    # -- the request path ----------------------------------------------------------------

    async def emit(self, event: RegistryEvent) -> None:
        # A client going away must not leave a stored change without its event.
        await asyncio.shield(self._emit(to_proto(event, self.source)))

    async def _emit(self, message: events_pb2.Event) -> None:
        with otel.publish_span(message.traceparent):
            await self._publish_or_outbox(message)

    async def _publish_or_outbox(self, message: events_pb2.Event) -> None:
        if self.outbox.depth == 0 and self.publisher.ready:
            started = time.perf_counter()
            try:
                await self.publisher.publish(message, self.publish_timeout)
            except Exception as exc:
                log.warning(
                    "event not acknowledged in time; writing it to the outbox",
                    extra={"event_id": message.id, "error": repr(exc)},
                )
            else:
                self.metrics.events_publish_latency.observe(time.perf_counter() - started)
                self.metrics.events_published.labels(message.action, "direct").inc()
                return
        await self.outbox.append(message.SerializeToString())
        self.metrics.events_outboxed.inc()
        self._depth_changed()
        self._wake.set()

    # -- the flusher ---------------------------------------------------------------------

    async def _nats_ready(self) -> None:
        self._retry_at = 0.0
        self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), RETRY_INTERVAL)
            except TimeoutError:
                pass
            self._wake.clear()
            if self.publisher.ready and time.monotonic() >= self._adopt_at:
                self._adopt_at = time.monotonic() + ADOPT_INTERVAL
                try:
                    await self.adopt_orphans()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("adopting outboxes failed")
            if (
                self.outbox.depth
                and self.publisher.connected
                and time.monotonic() >= self._retry_at
            ):
                try:
                    # Connected but the stream unconfirmed (a check timed out): check again.
                    if not self.publisher.stream_ok and not await self.publisher.ensure_stream():
                        self._back_off()
                        continue
                    await self.flush()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Never let the flusher die: the next round tries again.
                    log.exception("outbox flush failed")

    async def adopt_orphans(self) -> int:
        """Publish what the outboxes of workers that no longer run hold; how many events."""
        published = 0
        for directory in await asyncio.to_thread(self.outbox.siblings):
            orphan = Outbox(directory, self.outbox.max_entry)
            try:
                await orphan.open()
            except OutboxLocked:
                # Its worker runs (or another sink adopts it right now).
                orphan.abandon()
                continue
            try:
                if orphan.depth:
                    log.warning(
                        "adopting the outbox of a worker that no longer runs",
                        extra={"outbox": str(directory), "depth": orphan.depth},
                    )
                    published += await self._drain(orphan)
            finally:
                await orphan.close()
        return published

    async def flush(self) -> None:
        """Publish outbox entries oldest first until it is empty or NATS fails."""
        await self._drain(self.outbox)

    async def _drain(self, outbox: Outbox) -> int:
        flushed = 0
        while outbox.depth and self.publisher.ready:
            try:
                entry = await outbox.head()
            except OutboxEntryError as exc:
                await self._skip(outbox, exc.seq, exc.reason)
                continue
            if entry is None:
                break
            seq, payload = entry
            try:
                # Entries of an older release get the fields they lack, as on the stream.
                message = decode(payload)
                subject_of(message)
            except (UndecodableEvent, ValueError) as exc:
                await self._skip(outbox, seq, f"not an event: {exc}")
                continue
            started = time.perf_counter()
            try:
                await self.publisher.publish(message, self.flush_timeout)
            except Exception as exc:
                self._failures += 1
                if self._failures == 1 or self._failures % 20 == 0:
                    log.warning(
                        "outbox flush paused",
                        extra={
                            "error": repr(exc),
                            "depth": outbox.depth,
                            "failures": self._failures,
                        },
                    )
                # A server that lost its store answers "no stream": make it again.
                await self.publisher.ensure_stream()
                self._back_off()
                return flushed
            self._failures = 0
            self.metrics.events_publish_latency.observe(time.perf_counter() - started)
            self.metrics.events_published.labels(message.action, "outbox").inc()
            await outbox.remove(seq)
            self._depth_changed()
            flushed += 1
        if flushed and not outbox.depth:
            log.info("outbox flushed", extra={"events": flushed, "outbox": str(outbox.directory)})
        return flushed

    def _back_off(self) -> None:
        # NATS is up but refuses or is slow: do not hammer it (a reconnect ends the wait).
        delay = min(MAX_BACKOFF, 0.1 * 2 ** min(self._failures, 10))
        self._retry_at = time.monotonic() + delay

    async def _skip(self, outbox: Outbox, seq: int, reason: str) -> None:
        target = await outbox.quarantine(seq)
        self.metrics.events_outbox_skipped.inc()
        self._depth_changed()
        log.error(
            "unreadable outbox entry skipped",
            extra={"entry": seq, "reason": reason, "moved_to": str(target)},
        )

    def _depth_changed(self) -> None:
        depth = self.outbox.depth
        self.metrics.events_outbox_depth.set(depth)
        # Log as the backlog grows by each power of ten, not once per event.
        if depth and depth > self._logged_depth and math.log10(depth).is_integer():
            log.warning("events waiting in the outbox", extra={"depth": depth})
        if depth > self._logged_depth or depth == 0:
            self._logged_depth = depth
