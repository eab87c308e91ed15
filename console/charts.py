"""Small charts drawn on the server as SVG geometry: bars over the last hour, one a minute.

The template draws the rectangles; every bar carries its exact value as a title, and the chart
a text summary, so the figures read without the picture.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from console.format import exact_time

MINUTES = 60
WIDTH = 360
HEIGHT = 64


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    label: str
    peak: str
    summary: str
    bars: tuple[Bar, ...]
    width: int = WIDTH
    height: int = HEIGHT


def _minute(sample: Any) -> int:
    return int(sample.minute.seconds) // 60 * 60


def hour_chart(
    label: str,
    samples: Sequence[Any],
    value: Callable[[Any], float],
    show: Callable[[float], str],
    summary: str,
    now: float | None = None,
) -> Chart:
    """One bar a minute for the hour up to `now`; minutes without a sample have none."""
    end = int((time.time() if now is None else now) // 60) * 60
    start = end - (MINUTES - 1) * 60
    by_minute: dict[int, float] = {}
    for sample in samples:
        minute = _minute(sample)
        if start <= minute <= end:
            by_minute[minute] = by_minute.get(minute, 0.0) + value(sample)
    peak = max(by_minute.values(), default=0.0)
    slot = WIDTH / MINUTES
    bars = []
    for minute, amount in sorted(by_minute.items()):
        if amount <= 0 or peak <= 0:
            continue
        height = max(1.0, round(amount / peak * (HEIGHT - 2), 1))
        bars.append(
            Bar(
                x=round((minute - start) / 60 * slot, 1),
                y=round(HEIGHT - height, 1),
                width=round(slot - 1, 1),
                height=height,
                title=f"{exact_time(minute)}: {show(amount)}",
            )
        )
    return Chart(label=label, peak=show(peak), summary=summary, bars=tuple(bars))
