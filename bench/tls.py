"""Certificates for benchmarks over HTTPS: one private CA and one server certificate that both
registries serve, so the TLS work is the same on each side."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from nimbus.tls.authority import Authority


@dataclass(frozen=True)
class BenchTLS:
    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def key(self) -> Path:
        return self.directory / "server.key"

    @property
    def trust_dir(self) -> Path:
        """The CA alone: what skopeo's --cert-dir takes."""
        return self.directory / "trust"

    @property
    def ca(self) -> Path:
        return self.trust_dir / "ca.crt"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls(directory: Path) -> BenchTLS:
    tls = BenchTLS(directory)
    authority = Authority.create("Nimbus bench CA")
    authority.issue_server().write(tls.cert, tls.key)
    tls.trust_dir.mkdir(parents=True, exist_ok=True)
    tls.ca.write_bytes(authority.cert_pem)
    return tls
