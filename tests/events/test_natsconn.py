"""Connecting to NATS as every service does: several URLs, token, user and password, mutual
TLS; against real nats-server processes configured for each."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nimbus.natsconn import NatsOptions, connect
from tests.fixtures.nats import NatsServer
from tests.fixtures.registry import free_port


async def round_trip(options: NatsOptions) -> None:
    nc = await asyncio.wait_for(connect(options), 20)
    try:
        sub = await nc.subscribe("check")
        await nc.publish("check", b"hello")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"hello"
    finally:
        await nc.close()


ServerFactory = Callable[..., NatsServer]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    started: list[NatsServer] = []

    def make(*extra: str) -> NatsServer:
        server = NatsServer(tmp_path / f"nats-{len(started)}" / "store", extra_args=list(extra))
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


async def test_first_live_url_of_several(server_factory: ServerFactory) -> None:
    server = server_factory()
    dead = f"nats://127.0.0.1:{free_port()}"
    await round_trip(NatsOptions(servers=[dead, server.url]))


async def test_token(server_factory: ServerFactory) -> None:
    server = server_factory("--auth", "s3cret-token")
    await round_trip(NatsOptions(servers=[server.url], token="s3cret-token"))
    # A wrong token never connects (the client keeps trying, as a service should).
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(connect(NatsOptions(servers=[server.url], token="wrong")), 1.5)


async def test_user_and_password(server_factory: ServerFactory) -> None:
    server = server_factory("--user", "nimbus", "--pass", "pa55word")
    await round_trip(NatsOptions(servers=[server.url], user="nimbus", password="pa55word"))


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    server: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        usage = (
            x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


async def test_mutual_tls(server_factory: ServerFactory, tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("nimbus test CA", ca_key, None, ca_key, server=False)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(tmp_path / "ca", ca, ca_key)
    _write(tmp_path / "server", _cert("localhost", server_key, ca, ca_key, True), server_key)
    _write(tmp_path / "client", _cert("registry", client_key, ca, ca_key, False), client_key)

    server = server_factory(
        "--tls",
        "--tlscert",
        str(tmp_path / "server.crt"),
        "--tlskey",
        str(tmp_path / "server.key"),
        "--tlsverify",
        "--tlscacert",
        str(tmp_path / "ca.crt"),
    )
    await round_trip(
        NatsOptions(
            servers=[f"tls://127.0.0.1:{server.port}"],
            tls_ca=str(tmp_path / "ca.crt"),
            tls_cert=str(tmp_path / "client.crt"),
            tls_key=str(tmp_path / "client.key"),
            tls_hostname="localhost",
        )
    )
