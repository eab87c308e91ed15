"""A durable JetStream pull consumer whose messages are worked on in per-key ordered lanes.

Replicas of a service share one durable consumer, so JetStream hands each message to one of
them. A message becomes jobs, each queued on the lane of its key: a lane runs its jobs one after
the other, in stream order, while other lanes go on. The messages held at once are bounded, and
each is kept alive with progress acks while its jobs wait or work, acknowledged once every job
is done, and handed back (nak) when the consumer stops, so at-least-once holds across restarts
and kills (a killed replica's messages come back after `ack_wait`).

A job that fails is tried again with backoff: without end while NATS is away (nothing could be
recorded meanwhile; the lane waits, keeping its order), a few times for any other error (a
deterministic one would otherwise wedge its lane for good), and then given up: the handler
records the failure and the lane moves on. A job that cannot even be given up (recording
failed) has its message handed back, with a delay, once the message's other jobs are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from nimbus.natsfetch import fetch_available

J = TypeVar("J")

# Errors that say NATS (or JetStream behind it) cannot be reached right now; any other error
# of the client is an answer, and asking again gets the same one.
NATS_UNAVAILABLE: tuple[type[Exception], ...] = (
    TimeoutError,
    ConnectionError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServerError,
    nats.js.errors.ServiceUnavailableError,
)


def nats_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means NATS is away for now (another try later may succeed)."""
    return isinstance(error, NATS_UNAVAILABLE)


class Unreadable(Exception):
    """A message no replica can ever handle: it is terminated, not redelivered."""


@dataclass(frozen=True, slots=True)
class LaneSettings:
    # The consumer's ack wait: progress acks go out every third of it.
    ack_wait: float
    # Messages held at once (being worked on or waiting in a lane); fetching pauses beyond.
    max_in_flight: int
    fetch_batch: int = 256
    # Seconds one fetch waits for the next message.
    fetch_wait: float = 5.0
    # Tries of a job that fails with an error other than NATS being away, before it is given up.
    attempts: int = 3
    # Exponential backoff with jitter between tries, in seconds.
    retry_initial: float = 0.5
    retry_max: float = 30.0


class LaneHandler(ABC, Generic[J]):
    """What a service does with the messages: route them to jobs, handle and give up jobs."""

    @abstractmethod
    def route(self, msg: Msg) -> Sequence[tuple[Hashable, J]]:
        """The jobs one message asks for, each with the key of its lane; none: it is acked.

        Raises Unreadable for a message that can never be handled.
        """

    @abstractmethod
    async def handle(self, job: J) -> None:
        """Do the job; raising means it is not done (it is tried again, or given up)."""

    @abstractmethod
    async def give_up(self, job: J, error: Exception) -> None:
        """Record that the job failed for good (``error`` the last try's); then it is done."""

    def transient(self, error: Exception) -> bool:
        """Errors tried again without end: by default, NATS being away."""
        return nats_unavailable(error)

    def describe(self, job: J) -> Mapping[str, Any]:
        """Log fields naming the job."""
        return {}

    def settled(self, job: J) -> None:
        """The job is no longer held: done, given up, or handed back."""

    async def renew(self) -> None:
        """Runs with each round of progress acks (for leases held beside the messages)."""

    async def stopped(self) -> None:
        """The lanes were cancelled; the held messages are handed back next."""


@dataclass(slots=True)
class _Held:
    """One message: acknowledged when its last job is done, handed back if one failed."""

    msg: Msg
    pending: int
    failed: bool = False


@dataclass(slots=True)
class _Job(Generic[J]):
    job: J
    held: _Held


@dataclass(slots=True)
class _Lane(Generic[J]):
    jobs: deque[_Job[J]] = field(default_factory=deque)


class LaneConsumer(Generic[J]):
    """Runs one bound pull subscription through a handler until cancelled."""

    def __init__(
        self,
        handler: LaneHandler[J],
        settings: LaneSettings,
        log: logging.Logger,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        self._handler = handler
        self._settings = settings
        self._log = log
        # Log fields of every line: which consumer (and peer) this is.
        self._fields = dict(fields or {})
        # By stream sequence: a message handed out again while held here stays one message.
        self._held: dict[int, _Held] = {}
        self._lanes: dict[Hashable, _Lane[J]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()

    @property
    def held(self) -> int:
        """Messages held (not yet acknowledged) by this replica."""
        return len(self._held)

    async def run(self, sub: Any) -> None:
        """Fetch, route and work until cancelled; then hand back what is still held."""
        heartbeat = asyncio.create_task(self._heartbeat(), name="progress-acks")
        try:
            await self._fetch_forever(sub)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self._hand_back()

    async def _fetch_forever(self, sub: Any) -> None:
        s = self._settings
        while True:
            room = s.max_in_flight - len(self._held)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                msgs = await fetch_available(sub, min(s.fetch_batch, room), s.fetch_wait)
            except TimeoutError:
                continue
            except Exception:
                # NATS away or restarting: the client reconnects by itself; ask again soon.
                self._log.warning("fetching failed; retrying", extra=self._fields, exc_info=True)
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                await self._dispatch(msg)

    async def _dispatch(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        held = self._held.get(seq)
        if held is not None:
            held.msg = msg  # keep working; the newest delivery is the one to ack
            return
        try:
            routed = self._handler.route(msg)
        except Unreadable as error:
            self._log.error(
                "unreadable message dropped: %s", error, extra={**self._fields, "seq": seq}
            )
            with contextlib.suppress(Exception):
                await msg.term()
            return
        except Exception:
            # A bug: another replica (or a fixed release) may do better later.
            self._log.exception("cannot route a message", extra={**self._fields, "seq": seq})
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._settings.retry_max)
            return
        if not routed:
            with contextlib.suppress(Exception):
                await msg.ack()  # not acked: redelivered, and skipped again
            return
        held = _Held(msg, len(routed))
        self._held[seq] = held
        for key, job in routed:
            self._enqueue(key, _Job(job, held))

    def _enqueue(self, key: Hashable, job: _Job[J]) -> None:
        lane = self._lanes.get(key)
        if lane is not None:
            lane.jobs.append(job)
            return
        lane = self._lanes[key] = _Lane(deque([job]))
        task = asyncio.create_task(self._run_lane(key, lane), name=f"lane {key}")
        self._tasks.add(task)
        task.add_done_callback(self._lane_done)

    def _lane_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Its messages come back to a replica after ack_wait; nothing is lost.
            self._log.error("lane failed", exc_info=task.exception(), extra=self._fields)

    async def _run_lane(self, key: Hashable, lane: _Lane[J]) -> None:
        try:
            while lane.jobs:
                item = lane.jobs[0]
                done = await self._work(item.job)
                lane.jobs.popleft()
                self._handler.settled(item.job)
                await self._finish(item.held, done)
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _work(self, job: J) -> bool:
        """Done (or given up and recorded): True; neither could be: False."""
        failures = 0
        tries = 0
        while True:
            tries += 1
            try:
                await self._handler.handle(job)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as error:
                fields = {**self._fields, **self._handler.describe(job), "try": tries}
                if self._handler.transient(error):
                    self._log.warning("job interrupted; retrying", extra=fields, exc_info=True)
                    await asyncio.sleep(self._pause(tries))
                    continue
                failures += 1
                if failures < self._settings.attempts:
                    self._log.warning("job failed; retrying", extra=fields, exc_info=True)
                    await asyncio.sleep(self._pause(tries))
                    continue
                self._log.exception("job failed; giving up", extra=fields)
                return await self._give_up(job, error)

    async def _give_up(self, job: J, error: Exception) -> bool:
        tries = 0
        while True:
            tries += 1
            try:
                await self._handler.give_up(job, error)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as failure:
                fields = {**self._fields, **self._handler.describe(job)}
                if self._handler.transient(failure):
                    self._log.warning("failure not recorded yet; retrying", extra=fields)
                    await asyncio.sleep(self._pause(tries))
                    continue
                self._log.exception("cannot record a failure; handing back", extra=fields)
                return False

    def _pause(self, tries: int) -> float:
        s = self._settings
        base = min(s.retry_max, s.retry_initial * 2.0 ** min(tries - 1, 32))
        return base + random.uniform(0, s.retry_initial)

    async def _finish(self, held: _Held, done: bool) -> None:
        held.failed = held.failed or not done
        held.pending -= 1
        if held.pending > 0:
            return
        seq = held.msg.metadata.sequence.stream
        self._held.pop(seq, None)
        self._room.set()
        try:
            if held.failed:
                await held.msg.nak(delay=self._settings.retry_max)
            else:
                await held.msg.ack()
        except Exception:
            # Not lost: it comes back after ack_wait, and its jobs are safe to repeat.
            self._log.warning(
                "could not settle a message", extra={**self._fields, "seq": seq}, exc_info=True
            )

    async def _heartbeat(self) -> None:
        interval = max(0.2, self._settings.ack_wait / 3)
        while True:
            await asyncio.sleep(interval)
            renewing = asyncio.create_task(self._handler.renew())
            for held in list(self._held.values()):
                with contextlib.suppress(Exception):
                    await held.msg.in_progress()
            try:
                await renewing
            except Exception:
                self._log.warning("renewing failed", extra=self._fields, exc_info=True)

    async def _hand_back(self) -> None:
        lanes = list(self._lanes.values())
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in lanes:
            for item in lane.jobs:
                self._handler.settled(item.job)
        self._lanes.clear()
        with contextlib.suppress(Exception):
            await self._handler.stopped()
        # Handed back, the messages go to another replica at once instead of after ack_wait.
        for held in self._held.values():
            with contextlib.suppress(Exception):
                await held.msg.nak()
        self._held.clear()
