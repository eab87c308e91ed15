"""The values rules are written in: durations (90s, 12h, 7d), sizes (500MB, 10GiB), and the error
of a rule that cannot be used. Shared by the rules and the schedules parsers."""

from __future__ import annotations

import re
from typing import Any

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}
_BYTES_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)


class PolicyError(ValueError):
    """A rule cannot be used; the message names the rule (by index) and the field."""


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a number or a string such as 90s, 15m, 12h, 7d, 2w."""
    if isinstance(value, bool):
        raise PolicyError(f"{key}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value.strip())):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    elif isinstance(value, str) and value.strip().startswith("-"):
        raise PolicyError(f"{key}: must not be negative, got {value!r}")
    else:
        raise PolicyError(f"{key}: expected a duration such as 3600, 90s, 12h or 7d, got {value!r}")
    if seconds < 0:
        raise PolicyError(f"{key}: must not be negative, got {value!r}")
    return seconds


def parse_bytes(value: Any, key: str) -> int:
    """Bytes from a number or a string such as 500MB or 10GiB."""
    if isinstance(value, bool):
        raise PolicyError(f"{key}: expected a size in bytes, got {value!r}")
    if isinstance(value, int | float):
        size = int(value)
    elif isinstance(value, str) and (match := _BYTES_RE.match(value.strip())):
        unit = (match.group(2) or "B").upper()
        power = "BKMGT".index(unit[0]) if unit != "B" else 0
        base = 1024 if "I" in unit else 1000
        size = int(float(match.group(1)) * base**power)
    else:
        raise PolicyError(
            f"{key}: expected a size such as 1073741824, 500MB or 10GiB, got {value!r}"
        )
    if size < 0:
        raise PolicyError(f"{key}: must not be negative, got {value!r}")
    return size
