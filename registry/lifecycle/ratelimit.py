"""A byte budget per tick: how a background job (the scrub) reads at a bounded rate.

Time is cut into ticks of `tick` seconds counted from the limiter's start; each tick may
spend `rate * tick` bytes. A caller asks before reading a piece no larger than `piece`
(the budget, capped); when the tick cannot pay for it, the caller sleeps to the next tick.
The bytes spent per tick are kept, so what was read can be checked against the budget
without looking at a clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

# Pieces larger than this are read in several requests even without a rate.
MAX_PIECE = 1 << 20


@dataclass(frozen=True, slots=True)
class TickFigures:
    """Bytes spent per tick so far: the busiest tick, how many ticks spent any, the total."""

    tick_seconds: float
    budget: int
    max_tick_bytes: int
    ticks: int
    total: int


class ByteRate:
    def __init__(
        self,
        rate: int,
        tick: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``rate``: bytes per second, 0 for no limit."""
        self.rate = rate
        self.tick = tick
        self._clock = clock
        self._start = clock()
        # 0: unlimited; else at least one byte a tick, so every read makes progress.
        self.budget = max(1, int(rate * tick)) if rate > 0 else 0
        # Only the current tick is kept; the others are summed up as they end.
        self._current = -1
        self._spent = 0
        self._max = 0
        self._ticks = 0
        self._total = 0

    @property
    def piece(self) -> int:
        """The most one read may ask for."""
        return min(self.budget, MAX_PIECE) if self.budget else MAX_PIECE

    def _tick(self) -> int:
        return int((self._clock() - self._start) // self.tick)

    async def spend(self, size: int) -> None:
        """Wait until the current tick can pay ``size`` bytes (at most `piece`), and pay."""
        if size > self.piece:
            raise ValueError(f"{size} bytes is more than one piece ({self.piece})")
        while True:
            tick = self._tick()
            if tick != self._current:
                self._current, self._spent = tick, 0
            if not self.budget or self._spent + size <= self.budget:
                if self._spent == 0:
                    self._ticks += 1
                self._spent += size
                self._max = max(self._max, self._spent)
                self._total += size
                return
            await asyncio.sleep(max(0.0, (tick + 1) * self.tick - (self._clock() - self._start)))

    def figures(self) -> TickFigures:
        return TickFigures(
            tick_seconds=self.tick,
            budget=self.budget,
            max_tick_bytes=self._max,
            ticks=self._ticks,
            total=self._total,
        )
