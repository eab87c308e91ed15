"""HTTP headers of the Distribution API that more than one side reads or writes."""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime
from time import time

# Set on writes the replicator makes, so the peer's events name the site the change came from.
ORIGIN_SITE_HEADER = "Nimbus-Origin-Site"
CONTENT_DIGEST_HEADER = "Docker-Content-Digest"
SUBJECT_HEADER = "OCI-Subject"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds (a number or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP dates are GMT; `-0000` parses as naive.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time() if now is None else now))
