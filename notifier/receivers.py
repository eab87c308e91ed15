"""Per-receiver limits: a concurrency cap and a circuit breaker for each scheme://host:port.

A receiver that keeps failing gets its circuit opened: its deliveries wait (without spending
attempts) until the cooldown ends, then a single probe decides whether it closes again. Other
receivers have their own state, so one dead receiver never delays them.
"""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum
from urllib.parse import urlsplit


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(self, failures: int, cooldown: float) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = BreakerState.CLOSED
        self._changed = asyncio.Condition()

    async def admit(self, deadline: float) -> bool:
        """Wait until a request may go; False when `deadline` (monotonic) comes first."""
        async with self._changed:
            while True:
                now = time.monotonic()
                if self.state is BreakerState.CLOSED:
                    return True
                if self.state is BreakerState.OPEN and now >= self._opened_at + self._cooldown:
                    self.state = BreakerState.HALF_OPEN
                    self._probing = False
                if self.state is BreakerState.HALF_OPEN and not self._probing:
                    self._probing = True
                    return True
                if now >= deadline:
                    return False
                wake = min(deadline, self._opened_at + self._cooldown)
                if self.state is BreakerState.HALF_OPEN:
                    wake = deadline  # the probe's outcome will notify
                try:
                    await asyncio.wait_for(self._changed.wait(), max(0.001, wake - now))
                except TimeoutError:
                    pass

    async def record(self, healthy: bool) -> None:
        async with self._changed:
            if healthy:
                self._failures = 0
                self.state = BreakerState.CLOSED
            else:
                self._failures += 1
                if self.state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
                    self.state = BreakerState.OPEN
                    self._opened_at = time.monotonic()
            self._probing = False
            self._changed.notify_all()

    async def release_probe(self) -> None:
        """A probe that ended without a verdict (e.g. cancelled) lets another one go."""
        async with self._changed:
            self._probing = False
            self._changed.notify_all()


class Receiver:
    def __init__(self, concurrency: int, failures: int, cooldown: float) -> None:
        self.slots = asyncio.Semaphore(concurrency)
        self.breaker = CircuitBreaker(failures, cooldown)


def receiver_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class Receivers:
    def __init__(self, concurrency: int, failures: int, cooldown: float) -> None:
        self._settings = (concurrency, failures, cooldown)
        self._by_key: dict[str, Receiver] = {}

    def get(self, url: str) -> Receiver:
        key = receiver_key(url)
        receiver = self._by_key.get(key)
        if receiver is None:
            receiver = self._by_key[key] = Receiver(*self._settings)
        return receiver

    def states(self) -> list[str]:
        """Each receiver's circuit breaker state, as its metric names it."""
        return [r.breaker.state.value for r in self._by_key.values()]
