"""W3C Trace Context (`traceparent`) carried from a push to everything it causes.

The registry takes the push request's `traceparent` (or starts a trace when the client sent
none) and gives its own span id to the request; the event carries that, so the notifier's
deliveries (sent with a `traceparent` header) and the replicator's copies (their requests to the
peer carry one, and a Nimbus peer's own events continue it) are children of the push, one trace
across sites. Format: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

HEADER = "traceparent"
_FORMAT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
SAMPLED = "01"


class TraceParent(NamedTuple):
    trace_id: str
    span_id: str
    flags: str = SAMPLED

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse(value: str | None) -> TraceParent | None:
    """The trace context of a `traceparent` value; None when absent or malformed."""
    if not value:
        return None
    match = _FORMAT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, flags)


def new_span_id() -> str:
    return os.urandom(8).hex()


def child(parent: str | None) -> str:
    """A `traceparent` for a new span under `parent`: its trace with a fresh span id, or a new
    trace when `parent` is absent or malformed."""
    found = parse(parent)
    if found is None:
        return str(TraceParent(os.urandom(16).hex(), new_span_id()))
    return str(TraceParent(found.trace_id, new_span_id(), found.flags))


def continued(parent: str | None) -> str:
    """Like `child`, but "" when there is no valid parent (nothing to continue)."""
    return child(parent) if parse(parent) is not None else ""
