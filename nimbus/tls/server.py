"""The server side of TLS: one SSL context per process, and certificates rotated in place.

Rotation swaps the certificate inside the same context: handshakes after it get the new one,
connections already open keep theirs and are never cut.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass

from nimbus.tls.files import CertificateError, CertificateInfo, check_ca_bundle, check_pair

log = logging.getLogger("nimbus.tls")

MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = ("require", "optional")
# TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3's own set is fixed and modern).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass(frozen=True)
class ServerTLS:
    cert: str
    key: str
    client_ca: str = ""
    client_auth: str = "require"
    min_version: str = "1.2"


def server_context(settings: ServerTLS) -> tuple[ssl.SSLContext, CertificateInfo]:
    """A checked context for serving HTTP/1.1; a bad file raises CertificateError naming it."""
    info = check_pair(settings.cert, settings.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSIONS[settings.min_version]
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    _load_pair(context, settings)
    if settings.client_ca:
        check_ca_bundle(settings.client_ca)
        context.load_verify_locations(cafile=settings.client_ca)
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.client_auth == "require" else ssl.CERT_OPTIONAL
        )
    return context, info


def _load_pair(context: ssl.SSLContext, settings: ServerTLS) -> None:
    try:
        context.load_cert_chain(settings.cert, settings.key)
    except ssl.SSLError as exc:
        raise CertificateError(
            f"TLS certificate {settings.cert} and key {settings.key}: {exc.reason or exc}"
        ) from None


class CertificateReloader:
    """Watches the certificate and key files, and reloads on demand (SIGHUP): a pair that
    does not check out is logged and the one in use stays."""

    def __init__(self, context: ssl.SSLContext, settings: ServerTLS, info: CertificateInfo):
        self.context = context
        self.settings = settings
        self.info = info
        self._stamp = self._mtimes()

    def _mtimes(self) -> tuple[float, float]:
        try:
            return os.stat(self.settings.cert).st_mtime, os.stat(self.settings.key).st_mtime
        except OSError:
            return 0.0, 0.0

    def reload(self) -> bool:
        self._stamp = self._mtimes()
        try:
            info = check_pair(self.settings.cert, self.settings.key)
            _load_pair(self.context, self.settings)
        except CertificateError as exc:
            log.error("TLS certificate not reloaded, the one in use stays: %s", exc)
            return False
        if info.serial != self.info.serial:
            log.info(
                "TLS certificate reloaded",
                extra={"serial": f"{info.serial:x}", "not_after": info.not_after.isoformat()},
            )
        self.info = info
        return True

    async def watch(self, interval: float) -> None:
        # A renewal writes two files: wait until both have settled before loading them.
        while True:
            await asyncio.sleep(interval)
            stamp = self._mtimes()
            if stamp != self._stamp:
                await asyncio.sleep(min(interval, 1.0))
                if self._mtimes() == stamp:
                    self.reload()
