"""Fixtures of the HTTPS tests: a local CA, server and client certificates, TLS clients."""

from __future__ import annotations

import datetime
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from nimbus.tls.authority import Authority, Issued


@dataclass
class Certs:
    """A CA and the files a registry and its clients use; skopeo reads `cert_dir`."""

    directory: Path
    authority: Authority

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def key(self) -> Path:
        return self.directory / "server.key"

    @property
    def cert_dir(self) -> Path:
        return self.directory / "client-trust"

    def server_args(self, *extra: str) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key), *extra]

    def write_server(self, issued: Issued) -> int:
        """Put a server certificate in place, as a renewal does; its serial."""
        issued.write(self.cert, self.key)
        return x509.load_pem_x509_certificate(issued.cert_pem).serial_number

    def client(self, name: str) -> tuple[Path, Path]:
        cert, key = self.directory / f"{name}.cert", self.directory / f"{name}.key"
        self.authority.issue_client(name).write(cert, key)
        return cert, key


def make_certs(directory: Path) -> Certs:
    certs = Certs(directory, Authority.create())
    directory.mkdir(parents=True, exist_ok=True)
    certs.ca.write_bytes(certs.authority.cert_pem)
    certs.write_server(certs.authority.issue_server())
    certs.cert_dir.mkdir()
    (certs.cert_dir / "ca.crt").write_bytes(certs.authority.cert_pem)
    return certs


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "tls")


def client_context(ca: Path | None, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


def https_get(
    url: str, context: ssl.SSLContext, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return https_open(urllib.request.Request(url, headers=headers or {}), context)


def https_open(
    request: urllib.request.Request, context: ssl.SSLContext
) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def served_serial(port: int, ca: Path, client: tuple[Path, Path] | None = None) -> int:
    """The serial of the certificate a new connection is handed."""
    context = client_context(ca, client)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def expired(authority: Authority) -> Issued:
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    return authority.issue_server(days=1, not_before=long_ago)
