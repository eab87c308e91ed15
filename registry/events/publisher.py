"""Publishing events to the JetStream stream: connection, the stream made sure of, bounded acks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.js import JetStreamContext

from nimbus import eventstream, natsconn, streams
from nimbus.eventstream import StreamSettings
from nimbus.natsconn import NatsOptions, NatsRefused
from proto.nimbus.v1 import events_pb2
from registry.events.schema import subject_of

log = logging.getLogger("nimbus.events")

Callback = Callable[[], Awaitable[None]]

# Bound on stream management requests (info, create, update).
API_TIMEOUT = 2.0


class JetStreamPublisher:
    """Connects in the background (the registry serves while NATS is away) and publishes."""

    def __init__(
        self,
        options: NatsOptions,
        settings: StreamSettings,
        on_ready: Callback | None = None,
    ) -> None:
        self.options = options
        self.settings = settings
        self.on_ready = on_ready
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stream_ok = False
        self._task: asyncio.Task[None] | None = None
        self._after_reconnect: asyncio.Task[None] | None = None
        self.connected_once = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def stream_ok(self) -> bool:
        """The stream was found or made since the last failure to check it."""
        return self._stream_ok

    @property
    def ready(self) -> bool:
        """Connected, and the stream is known to exist: worth trying a publish."""
        return self._stream_ok and self.connected

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="nats-connect")

    async def _connect(self) -> None:
        try:
            await self._connect_and_prepare()
        except asyncio.CancelledError:
            raise
        except NatsRefused as exc:
            # A configuration to fix, not a fault of ours: its message says which.
            log.error(
                "cannot connect to NATS; events stay in the outbox", extra={"error": str(exc)}
            )
        except Exception:
            # Events keep going to the outbox; say loudly why they are not published.
            log.exception("cannot connect to NATS; events stay in the outbox")

    async def _connect_and_prepare(self) -> None:
        self._nc = await natsconn.connect(self.options, on_reconnect=self._reconnected)
        self._js = self._nc.jetstream(timeout=API_TIMEOUT)
        delay = 0.5
        while not await self.ensure_stream():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        self.connected_once.set()
        if self.on_ready is not None:
            await self.on_ready()

    async def _reconnected(self) -> None:
        # Not inline: the client awaits this callback while reconnecting.
        self._after_reconnect = asyncio.create_task(self._check_stream())

    async def _check_stream(self) -> None:
        # The server may have come back without its store; ensure_stream makes it again.
        if await self.ensure_stream() and self.on_ready is not None:
            await self.on_ready()

    async def ensure_stream(self) -> bool:
        """Create the stream, or bring its settings up to date; False when NATS refused."""
        if self._js is None:
            return False
        try:
            outcome = await eventstream.ensure(self._js, self.settings)
        except Exception as exc:
            self._stream_ok = False
            log.warning(
                "cannot create or update the event stream",
                extra={"stream": streams.EVENTS_STREAM, "error": repr(exc)},
            )
            return False
        if outcome != eventstream.UNCHANGED:
            log.info(f"event stream {outcome}", extra={"stream": streams.EVENTS_STREAM})
        self._stream_ok = True
        return True

    async def publish(self, event: events_pb2.Event, ack_wait: float) -> int:
        """Publish and await the JetStream ack for at most ``ack_wait`` seconds.

        Returns the stream sequence. Raises on timeout, disconnection or refusal.
        """
        if self._js is None:
            raise ConnectionError("not connected to NATS")
        # The outer bound also covers the client's own buffering (a full socket to a frozen
        # server), which the request timeout alone does not.
        async with asyncio.timeout(ack_wait):
            ack = await self._js.publish(
                subject_of(event),
                event.SerializeToString(),
                timeout=ack_wait,
                stream=streams.EVENTS_STREAM,
                headers={
                    streams.MSG_ID_HEADER: event.id,
                    streams.CONTENT_TYPE_HEADER: streams.EVENT_CONTENT_TYPE,
                },
            )
        return int(ack.seq)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
