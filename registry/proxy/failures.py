"""Upstream trouble in the spec's terms: which failures allow a stale answer, and what a client
hears when there is nothing cached to fall back on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from nimbus.oci.errors import DigestMismatchError, RegistryError, SizeMismatchError, is_transient
from registry.errors import ErrorCode, OCIError

STALE_WARNING = '110 - "Response is Stale"'


class UpstreamContentError(Exception):
    """The upstream sent something the cache refuses to keep (too large, not the digest)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """An upstream failure sorted: its metric reason, and whether cached content may stand in."""

    reason: str
    stale_ok: bool
    error: OCIError


def classify(exc: BaseException, upstream: str, what: str, unknown: ErrorCode) -> Failure:
    """``exc`` raised talking to ``upstream`` about ``what``; ``unknown`` is the 404's code."""
    if isinstance(exc, OCIError):
        return Failure("refused", False, exc)
    if isinstance(exc, RegistryError):
        return _status(exc, upstream, what, unknown)
    if isinstance(exc, DigestMismatchError | SizeMismatchError | UpstreamContentError):
        return Failure(
            "bad_content",
            False,
            _unavailable(f"upstream {upstream} sent bad content for {what}: {exc}"),
        )
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return Failure(
            "timeout",
            True,
            _unavailable(f"upstream {upstream} did not answer in time for {what}"),
        )
    if is_transient(exc) or isinstance(exc, aiohttp.ClientError | OSError):
        return Failure(
            "unreachable",
            is_transient(exc),
            _unavailable(f"upstream {upstream} is unreachable for {what}: {exc}"),
        )
    raise exc


def _unavailable(message: str) -> OCIError:
    return OCIError(ErrorCode.UNAVAILABLE, message)


def _status(exc: RegistryError, upstream: str, what: str, unknown: ErrorCode) -> Failure:
    said = f"{exc.code}: {exc.message}" if exc.code else (exc.message or f"HTTP {exc.status}")
    if exc.status == 404:
        return Failure("not_found", False, OCIError(unknown, f"upstream {upstream} has no {what}"))
    if exc.status == 429:
        headers = {"Retry-After": str(int(exc.retry_after + 0.999))} if exc.retry_after else None
        return Failure(
            "rate_limited",
            True,
            OCIError(
                ErrorCode.TOOMANYREQUESTS,
                f"upstream {upstream} is rate limiting pulls ({said})",
                headers=headers,
            ),
        )
    if exc.status in (401, 403):
        return Failure(
            "denied",
            False,
            OCIError(
                ErrorCode.DENIED,
                f"upstream {upstream} refused access to {what} ({said}); "
                "check the upstream's credentials",
            ),
        )
    if exc.status >= 500 or exc.transient:
        return Failure(
            f"status_{exc.status}",
            True,
            OCIError(ErrorCode.UNAVAILABLE, f"upstream {upstream} failed for {what} ({said})"),
        )
    return Failure(
        f"status_{exc.status}",
        False,
        OCIError(unknown, f"upstream {upstream} refused {what} ({said})"),
    )
