"""One HTTP POST to a receiver, measured and classified (success, worth retrying, or not)."""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from nimbus.oci.headers import retry_after_seconds
from nimbus.tls.client import client_context
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


@dataclass(frozen=True)
class ReceiverTls:
    """How a webhook meets an https receiver: the CA bundle verifying it (the system's CAs when
    empty) and the client certificate and key it presents when the receiver asks for one."""

    ca_pem: str = ""
    cert_pem: str = ""
    key_pem: str = ""

    @classmethod
    def of(cls, webhook: webhooks_pb2.Webhook | None) -> ReceiverTls:
        if webhook is None:
            return cls()
        return cls(webhook.ca_pem, webhook.client_cert_pem, webhook.client_key_pem)


# A webhook without a CA bundle or client certificate of its own: the system's CAs verify it.
SYSTEM_TLS = ReceiverTls()


def _tls_hint(url: str, tls: ReceiverTls, exc: BaseException) -> str:
    """What to check when an https receiver hung up without an answer. A receiver refusing a
    client certificate (or the lack of one) may close the connection without a TLS alert (an
    asyncio server does), which the sender sees as a bare disconnect."""
    if not url.lower().startswith("https://"):
        return ""
    if not isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError) and not (
        isinstance(exc, aiohttp.ClientOSError) and exc.errno == errno.ECONNRESET
    ):
        return ""
    if tls.cert_pem:
        return (
            " (the receiver closed the TLS connection without answering: it may not accept"
            " this webhook's client certificate)"
        )
    return (
        " (the receiver closed the TLS connection without answering: if it requires a client"
        " certificate, give the webhook client_cert_pem and client_key_pem)"
    )


def _headers(items: Mapping[str, str]) -> list[webhooks_pb2.Header]:
    return [webhooks_pb2.Header(name=k, value=v) for k, v in items.items()]


class Sender:
    def __init__(self, timeout: float, excerpt_bytes: int, instance: str) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._excerpt = excerpt_bytes
        self._instance = instance
        self._session: aiohttp.ClientSession | None = None
        # One context per CA bundle and client certificate a webhook names (building one parses
        # the PEM); a changed certificate or key is a new entry.
        self._contexts: dict[ReceiverTls, ssl.SSLContext] = {}

    def _verify(self, tls: ReceiverTls) -> ssl.SSLContext | bool:
        """The system's CAs (True), or a context of the webhook's own bundle and client
        certificate; never unverified."""
        if tls == SYSTEM_TLS:
            return True
        context = self._contexts.get(tls)
        if context is None:
            context = self._contexts[tls] = client_context(tls.ca_pem, tls.cert_pem, tls.key_pem)
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
        tls: ReceiverTls = SYSTEM_TLS,
    ) -> Outcome:
        attempt = webhooks_pb2.DeliveryAttempt(
            number=number, instance=self._instance, request_headers=_headers(headers)
        )
        attempt.started_at.FromNanoseconds(time.time_ns())
        start = time.perf_counter()
        try:
            async with self._client().post(
                url, data=body, headers=dict(headers), ssl=self._verify(tls)
            ) as response:
                excerpt = await response.content.read(self._excerpt)
                status = response.status
                attempt.response_headers.extend(_headers(response.headers))
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            attempt.error = "timed out"
            return self._failed(attempt, start)
        except (aiohttp.ClientError, OSError) as exc:
            attempt.error = f"{type(exc).__name__}: {exc}".rstrip(": ") + _tls_hint(url, tls, exc)
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
