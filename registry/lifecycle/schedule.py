"""When a scheduled job runs: an interval ("6h") or a cron expression ("0 3 * * *", in UTC).

An interval counts from the Unix epoch, not from a process's start, so that every replica
computes the same times (and one of them gets the job's lease). A cron expression has the
five fields minute, hour, day of month, month, day of week, or is one of @hourly, @daily,
@weekly, @monthly, @yearly; it is read by croniter. A bad one is refused with a message
naming the setting and, where it can tell, the cron field that is wrong.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from croniter import CroniterError, croniter

from registry.lifecycle.values import PolicyError, parse_duration

log = logging.getLogger("nimbus.registry.lifecycle")

CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
_MACROS = frozenset(
    {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}
)
# The shortest interval accepted: a job every few seconds would be a busy loop over storage.
MIN_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Schedule:
    text: str
    # Seconds between runs, or None for a cron expression.
    interval: float | None = None

    def next_after(self, when: float) -> float:
        """The first run strictly after ``when`` (Unix seconds)."""
        if self.interval is not None:
            return (math.floor(when / self.interval) + 1) * self.interval
        following: float = croniter(self.text, when).get_next(float)
        return following

    def due(self, since: float, now: float) -> bool:
        """Whether a run fell in (since, now]."""
        return self.next_after(since) <= now


def _is_cron(text: str) -> bool:
    return text.startswith("@") or len(text.split()) > 1


def _bad_field(fields: list[str]) -> str:
    """Which of five cron fields croniter refuses, each tried alone among stars."""
    for index, value in enumerate(fields):
        probe = ["*"] * len(CRON_FIELDS)
        probe[index] = value
        try:
            croniter(" ".join(probe), 0.0)
        except CroniterError:
            return f"the {CRON_FIELDS[index]} field {value!r} is not valid"
    return "its fields do not go together"


def parse_schedule(value: Any, key: str) -> Schedule:
    """An interval (a duration: 3600, 90s, 6h, 1d) or a cron expression; PolicyError names key."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PolicyError(f"{key}: expected an interval such as 6h or a cron expression")
    text = str(value).strip()
    if isinstance(value, str) and _is_cron(text):
        return _cron(text, key)
    seconds = parse_duration(value, key)
    if seconds < MIN_INTERVAL:
        raise PolicyError(f"{key}: an interval of at least {MIN_INTERVAL:g}s, got {value!r}")
    return Schedule(text, seconds)


def _cron(text: str, key: str) -> Schedule:
    text = " ".join(text.split())
    if text.startswith("@"):
        if text not in _MACROS:
            known = ", ".join(sorted(_MACROS))
            raise PolicyError(f"{key}: {text!r} is not a cron macro (known: {known})")
    else:
        fields = text.split(" ")
        if len(fields) != len(CRON_FIELDS):
            raise PolicyError(
                f"{key}: {text!r} has {len(fields)} fields; a cron expression has 5 "
                f"({', '.join(CRON_FIELDS)})"
            )
        try:
            croniter(text, 0.0)
        except CroniterError:
            raise PolicyError(
                f"{key}: {text!r} is not a cron expression: {_bad_field(fields)}"
            ) from None
    schedule = Schedule(text)
    try:
        schedule.next_after(time.time())
    except CroniterError:
        raise PolicyError(f"{key}: {text!r} never comes (no such date)") from None
    return schedule


def next_run(schedules: Mapping[str, Schedule], now: float) -> float | None:
    """The earliest run of any of ``schedules`` after ``now``."""
    return min((s.next_after(now) for s in schedules.values()), default=None)


def due(schedules: Mapping[str, Schedule], since: float, now: float) -> list[str]:
    """Names of the schedules with a run in (since, now], in order."""
    return sorted(name for name, s in schedules.items() if s.due(since, now))


async def run_on_schedule(
    schedules: Callable[[], Awaitable[Mapping[str, Schedule]]],
    run: Callable[[Sequence[str]], Awaitable[None]],
    poll: float = 30.0,
    clock: Callable[[], float] = time.time,
) -> None:
    """Forever: run the jobs whose time came, with their names; ``schedules`` is asked again
    at least every ``poll`` seconds (rules edited meanwhile). A run missed while another ran
    (or the process was down) is not made up: the next one comes at its own time."""
    since = clock()
    while True:
        try:
            current = await schedules()
        except Exception as error:
            log.warning("schedules not read", extra={"error": str(error)})
            current = {}
        now = clock()
        names = due(current, since, now)
        since = now
        if names:
            try:
                await run(names)
            except Exception as error:
                log.warning("scheduled run failed", extra={"jobs": names, "error": str(error)})
        following = next_run(current, clock())
        wait = poll if following is None else min(poll, following - clock())
        await asyncio.sleep(max(0.05, wait))
