"""HTTP byte ranges: `Range` on blob reads and `Content-Range` on upload chunks."""

from __future__ import annotations

import re

from registry.errors import ErrorCode, OCIError

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CONTENT_RANGE_RE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


def parse_range(header: str, size: int) -> tuple[int, int]:
    """One satisfiable range as (first, last) inclusive, or 416 RANGE_INVALID."""
    match = _RANGE_RE.match(header.strip())
    unsatisfiable = OCIError(
        ErrorCode.RANGE_INVALID,
        "requested range not satisfiable",
        detail={"range": header, "size": size},
        headers={"Content-Range": f"bytes */{size}"},
    )
    if not match or (not match.group(1) and not match.group(2)):
        raise unsatisfiable
    first_raw, last_raw = match.groups()
    if not first_raw:
        suffix = int(last_raw)
        if suffix == 0:
            raise unsatisfiable
        return max(size - suffix, 0), size - 1
    first = int(first_raw)
    last = int(last_raw) if last_raw else size - 1
    if first >= size or last < first:
        raise unsatisfiable
    return first, min(last, size - 1)


def parse_content_range(header: str) -> tuple[int, int]:
    match = _CONTENT_RANGE_RE.match(header.strip())
    if not match:
        raise OCIError(ErrorCode.RANGE_INVALID, "malformed Content-Range", detail={"range": header})
    return int(match.group(1)), int(match.group(2))
