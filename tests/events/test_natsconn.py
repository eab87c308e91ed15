"""Connecting to NATS as every service does: several URLs, token, user and password, mutual
TLS; against real nats-server processes configured for each."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nimbus.natsconn import NatsOptions, NatsRefused, connect
from nimbus.oci.client import RegistryClient
from tests.fixtures.nats import NatsServer
from tests.fixtures.registry import RegistryFactory, free_port


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


async def test_user_and_password(server_factory: ServerFactory) -> None:
    server = server_factory("--user", "nimbus", "--pass", "pa55word")
    await round_trip(NatsOptions(servers=[server.url], user="nimbus", password="pa55word"))


async def test_refused_credentials_are_named_at_once(server_factory: ServerFactory) -> None:
    by_token = server_factory("--auth", "s3cret-token")
    by_user = server_factory("--user", "nimbus", "--pass", "pa55word")
    cases = [
        (NatsOptions(servers=[by_token.url], token="wrong-token"), "the token (nats_token)"),
        (
            NatsOptions(servers=[by_token.url]),
            "a connection without credentials (set nats_token, nats_user or nats_creds)",
        ),
        (
            NatsOptions(servers=[by_user.url], user="nimbus", password="wrong-password"),
            "user 'nimbus' or its password (nats_user, nats_password)",
        ),
    ]
    for options, named in cases:
        # Not retried until the caller gives up: a hang fails here as a TimeoutError.
        with pytest.raises(NatsRefused) as refused:
            await asyncio.wait_for(connect(options), 20)
        message = str(refused.value)
        assert f"NATS at {options.servers[0]} refused {named}: authorization violation" == message
        assert "wrong" not in message  # never the secret itself


async def test_a_service_given_refused_credentials_exits_with_the_reason(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--user", "nimbus", "--pass", "pa55word")
    address = f"127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nimbus.cli",
        "notifier",
        *("--nats", server.url, "--nats-user", "nimbus", "--nats-password", "wrong"),
        *("--grpc-listen", address),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = (out + err).decode()
    assert proc.returncode == 2, output
    assert (
        f"nimbus notifier: configuration error: NATS at {server.url} refused user 'nimbus' "
        "or its password (nats_user, nats_password): authorization violation"
    ) in output
    assert "Traceback" not in output


async def test_a_registry_given_refused_credentials_says_why_and_keeps_serving(
    server_factory: ServerFactory, registry_factory: RegistryFactory
) -> None:
    server = server_factory("--auth", "s3cret-token")
    registry = registry_factory(
        extra_args=["--nats", server.url, "--nats-token", "wrong", "--site", "a"]
    )
    expected = f"NATS at {server.url} refused the token (nats_token): authorization violation"
    deadline = time.monotonic() + 30
    while expected not in registry.log_text():
        assert time.monotonic() < deadline, registry.log_text()[-2000:]
        await asyncio.sleep(0.1)
    assert "Traceback" not in registry.log_text()
    async with RegistryClient(registry.url) as client:
        await client.ping()  # still serving: GET /v2/ answers 200


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
