"""One HTTP POST to a receiver, measured and classified (success, worth retrying, or not)."""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from proto.nimbus.v1 import webhooks_pb2

USER_AGENT = "nimbus-notifier/0.1"
# 408 and 429 say "later", as 5xx do; any other 4xx will not change by retrying.
_RETRY_STATUSES = {408, 429}


@dataclass
class Outcome:
    attempt: webhooks_pb2.DeliveryAttempt
    succeeded: bool
    # Another attempt may succeed (connection error, timeout, 408, 429, 5xx).
    retryable: bool
    # The receiver looks unwell (counts towards opening its circuit); a 429 does not.
    receiver_failure: bool
    # Seconds the receiver asked us to wait (Retry-After), if it did.
    retry_after: float | None = None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def _headers(items: Mapping[str, str]) -> list[webhooks_pb2.Header]:
    return [webhooks_pb2.Header(name=k, value=v) for k, v in items.items()]


class Sender:
    def __init__(self, timeout: float, excerpt_bytes: int, instance: str) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._excerpt = excerpt_bytes
        self._instance = instance
        self._session: aiohttp.ClientSession | None = None
        # One context per private CA bundle a webhook names (building one parses the PEM).
        self._contexts: dict[str, ssl.SSLContext] = {}

    def _verify(self, ca_pem: str) -> ssl.SSLContext | bool:
        """The system's CAs (True), or the webhook's own bundle; never unverified."""
        if not ca_pem:
            return True
        context = self._contexts.get(ca_pem)
        if context is None:
            context = self._contexts[ca_pem] = ssl.create_default_context(cadata=ca_pem)
        return context

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Per-receiver limits are enforced above this layer; the pool itself is unbounded.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        number: int,
        ca_pem: str = "",
    ) -> Outcome:
        attempt = webhooks_pb2.DeliveryAttempt(
            number=number, instance=self._instance, request_headers=_headers(headers)
        )
        attempt.started_at.GetCurrentTime()
        start = time.perf_counter()
        try:
            async with self._client().post(
                url, data=body, headers=dict(headers), ssl=self._verify(ca_pem)
            ) as response:
                excerpt = await response.content.read(self._excerpt)
                status = response.status
                attempt.response_headers.extend(_headers(response.headers))
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            attempt.error = "timed out"
            return self._failed(attempt, start)
        except (aiohttp.ClientError, OSError) as exc:
            attempt.error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return self._failed(attempt, start)
        except asyncio.CancelledError:
            raise
        attempt.latency_ms = (time.perf_counter() - start) * 1000
        attempt.status_code = status
        attempt.response_body_excerpt = excerpt.decode("utf-8", errors="replace")
        if 200 <= status < 300:
            return Outcome(attempt, succeeded=True, retryable=False, receiver_failure=False)
        attempt.error = f"HTTP {status}"
        retryable = status >= 500 or status in _RETRY_STATUSES
        return Outcome(
            attempt,
            succeeded=False,
            retryable=retryable,
            receiver_failure=status >= 500,
            retry_after=retry_after if status in (429, 503) else None,
        )

    @staticmethod
    def _failed(attempt: webhooks_pb2.DeliveryAttempt, start: float) -> Outcome:
        attempt.latency_ms = (time.perf_counter() - start) * 1000
        return Outcome(attempt, succeeded=False, retryable=True, receiver_failure=True)
