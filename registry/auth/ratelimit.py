"""Failed logins, rate-limited per client address.

A client that failed `attempts` times within `window` seconds is refused (429) until its oldest
failure leaves the window, whatever credentials it sends next: otherwise a guesser would learn
the right password from the one attempt that is not refused. Memory is bounded: past
`max_clients` addresses, the stalest are forgotten first.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class FailedLoginLimiter:
    def __init__(
        self,
        attempts: int,
        window: float,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self.window = window
        self._max_clients = max_clients
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it may try now."""
        now = self._clock()
        failures = self._recent(client, now)
        if failures is None or len(failures) < self.attempts:
            return None
        return max(1, math.ceil(failures[0] + self.window - now))

    def failed(self, client: str) -> None:
        now = self._clock()
        failures = self._recent(client, now)
        if failures is None:
            if len(self._failures) >= self._max_clients:
                self._evict(now)
            failures = self._failures[client] = deque(maxlen=self.attempts)
        failures.append(now)

    def _evict(self, now: float) -> None:
        for client in [c for c, f in self._failures.items() if f[-1] <= now - self.window]:
            del self._failures[client]
        while len(self._failures) >= self._max_clients:
            del self._failures[next(iter(self._failures))]
