"""Sizes and times for people, with the exact value beside for a title attribute."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: int | float) -> str:
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def exact_size(size: int | float) -> str:
    return f"{int(size):,} bytes"


def _seconds(stamp: Any) -> float | None:
    """A protobuf Timestamp, a datetime or epoch seconds; None when unset."""
    if stamp is None:
        return None
    if isinstance(stamp, int | float):
        return float(stamp) or None
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    seconds, nanos = int(stamp.seconds), int(stamp.nanos)
    if not (seconds or nanos):
        return None
    return seconds + nanos / 1e9


def exact_time(stamp: Any) -> str:
    seconds = _seconds(stamp)
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def human_time(stamp: Any, now: float | None = None) -> str:
    seconds = _seconds(stamp)
    if seconds is None:
        return "never"
    delta = (now if now is not None else time.time()) - seconds
    ago = delta >= 0
    delta = abs(delta)
    for limit, size, unit in (
        (60, 1, "s"),
        (3600, 60, "min"),
        (86400, 3600, "h"),
        (86400 * 60, 86400, "d"),
    ):
        if delta < limit:
            amount = f"{int(delta // size)} {unit}"
            return f"{amount} ago" if ago else f"in {amount}"
    return exact_time(stamp)[:10]


def short_digest(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:12]}" if hex_part else digest


def platform_name(platform: Any) -> str:
    parts = [platform.os, platform.architecture]
    if platform.variant:
        parts.append(platform.variant)
    return "/".join(p for p in parts if p) or "unknown"
