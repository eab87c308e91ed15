"""What can go wrong talking to a registry, sorted into worth retrying or not."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp

# 408 and 429 are the 4xx a client should try again; every 5xx too.
_TRANSIENT_4XX = frozenset({408, 429})


class RegistryError(Exception):
    """A registry answered with an error status."""

    def __init__(
        self,
        status: int,
        method: str,
        url: str,
        code: str = "",
        message: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.code = code
        self.message = message
        self.retry_after = retry_after
        what = f"{code}: {message}" if code else message
        super().__init__(f"{method} {url}: HTTP {status}" + (f" {what}" if what else ""))

    @property
    def transient(self) -> bool:
        return self.status >= 500 or self.status in _TRANSIENT_4XX


class ClientCertificateRequiredError(Exception):
    """A registry asked for a client certificate at the TLS handshake, the client had none, and
    the registry hung up without answering. Stays so until the client is given a certificate."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"{url}: the TLS handshake failed: the registry asked for a client certificate, none"
            " is set (client_cert_pem and client_key_pem), and it closed the connection"
        )


class DigestMismatchError(Exception):
    """Content read from the source does not hash to the digest it was asked for."""

    def __init__(self, expected: str, actual: str, where: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"digest mismatch for {where}: expected {expected}, got {actual}")


class SizeMismatchError(Exception):
    """The source sent more or fewer bytes than the descriptor promised."""


def is_transient(error: BaseException) -> bool:
    """Connection trouble, timeouts, 5xx, 408 and 429: worth another try later."""
    if isinstance(error, RegistryError):
        return error.transient
    if isinstance(error, DigestMismatchError | SizeMismatchError):
        return False
    # A certificate that does not verify (wrong CA, wrong name, expired) stays so until an
    # operator fixes the peer's settings: a failure record to retry then, not a retry loop.
    if isinstance(error, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return False
    return isinstance(
        error,
        aiohttp.ClientConnectionError
        | aiohttp.ClientPayloadError
        | aiohttp.ServerTimeoutError
        | asyncio.TimeoutError
        | ConnectionError,
    )
