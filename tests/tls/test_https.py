"""HTTPS on the OCI API: real clients verify it, bad files stop the start, client certificates
gate the handshake or log in, and certificates rotate without cutting a pull."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nimbus.tls.authority import Authority
from tests.fixtures.images import make_image, write_oci_layout
from tests.fixtures.registry import RegistryFactory, RegistryProcess, free_port
from tests.fixtures.users import write_htpasswd
from tests.tls.conftest import (
    Certs,
    client_context,
    expired,
    https_get,
    https_open,
    make_certs,
    served_serial,
)

MIB = 1024 * 1024


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )


# -- real clients -----------------------------------------------------------------------------


def test_skopeo_copies_in_and_out_with_verification(
    certs: Certs, registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    registry = registry_factory(certs.server_args())
    image = make_image((200_000, 30_000), seed=120)
    layout = write_oci_layout(tmp_path / "layout", {"v1": image})
    target = f"docker://{registry.host}/secure/app:v1"
    trust = f"--dest-cert-dir={certs.cert_dir}"
    pushed = skopeo("copy", "--dest-tls-verify=true", trust, layout.ref("v1"), target)
    assert pushed.returncode == 0, pushed.stderr
    inspect = skopeo(
        "inspect", "--tls-verify=true", f"--cert-dir={certs.cert_dir}", "--raw", target
    )
    assert inspect.returncode == 0, inspect.stderr
    assert hashlib.sha256(inspect.stdout.encode()).hexdigest() == image.digest.split(":")[1]
    pulled = skopeo(
        "copy",
        "--src-tls-verify=true",
        f"--src-cert-dir={certs.cert_dir}",
        target,
        f"oci:{tmp_path / 'out'}:v1",
    )
    assert pulled.returncode == 0, pulled.stderr
    for blob in image.blobs:
        algorithm, hex_ = blob.digest.split(":")
        assert (tmp_path / "out" / "blobs" / algorithm / hex_).read_bytes() == blob.data

    # Another CA's trust does not verify it.
    other = make_certs(tmp_path / "other")
    refused = skopeo(
        "inspect", "--tls-verify=true", f"--cert-dir={other.cert_dir}", "--raw", target
    )
    assert refused.returncode != 0
    assert "certificate signed by unknown authority" in refused.stderr


def test_urls_handed_out_are_https(certs: Certs, registry_factory: RegistryFactory) -> None:
    registry = registry_factory(certs.server_args("--auth-token"))
    status, headers, _ = https_get(f"{registry.url}/v2/", client_context(certs.ca))
    assert status == 401
    assert f'realm="https://{registry.host}/auth/token"' in headers["WWW-Authenticate"]


@pytest.mark.parametrize("trusted", [True, False])
def test_forwarded_proto_behind_a_proxy(registry_factory: RegistryFactory, trusted: bool) -> None:
    registry = registry_factory(["--auth-token", *(["--trust-forwarded-headers"] * trusted)])
    request = urllib.request.Request(
        f"{registry.url}/v2/",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example"},
    )
    with pytest.raises(urllib.error.HTTPError) as reply:
        urllib.request.urlopen(request, timeout=10)
    challenge = reply.value.headers["WWW-Authenticate"]
    # Off by default: any client could send the headers.
    expected = "https://registry.example" if trusted else f"http://{registry.host}"
    assert f'realm="{expected}/auth/token"' in challenge


# -- bad files stop the start -----------------------------------------------------------------


def start_fails(tmp_path: Path, *args: str) -> str:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "nimbus.cli", "registry"),
            *("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data")),
            *("--grpc-listen", "", *args),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_bad_certificate_files_stop_the_start(certs: Certs, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.crt"
    err = start_fails(tmp_path, "--tls-cert", str(missing), "--tls-key", str(certs.key))
    assert f"{missing}: no such file" in err

    other = Authority.create().issue_server()
    (tmp_path / "other.key").write_bytes(other.key_pem)
    err = start_fails(tmp_path, *certs.server_args()[:2], "--tls-key", str(tmp_path / "other.key"))
    assert f"{tmp_path / 'other.key'}: does not match the certificate in {certs.cert}" in err

    old = expired(certs.authority)
    old.write(tmp_path / "old.crt", tmp_path / "old.key")
    err = start_fails(
        tmp_path, "--tls-cert", str(tmp_path / "old.crt"), "--tls-key", str(tmp_path / "old.key")
    )
    assert f"{tmp_path / 'old.crt'}: expired on" in err

    (tmp_path / "garbage.crt").write_text("not a certificate\n")
    err = start_fails(
        tmp_path, "--tls-cert", str(tmp_path / "garbage.crt"), "--tls-key", str(certs.key)
    )
    assert f"{tmp_path / 'garbage.crt'}: no PEM certificate" in err

    unreadable = tmp_path / "unreadable.key"
    unreadable.write_bytes(b"")
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        err = start_fails(tmp_path, *certs.server_args()[:2], "--tls-key", str(unreadable))
        assert f"{unreadable}: cannot read it" in err


# -- client certificates ------------------------------------------------------------------------


def test_client_certificate_required(certs: Certs, registry_factory: RegistryFactory) -> None:
    registry = registry_factory(certs.server_args("--tls-client-ca", str(certs.ca)))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        https_get(f"{registry.url}/v2/", client_context(certs.ca))
    status, _, _ = https_get(f"{registry.url}/v2/", client_context(certs.ca, certs.client("ci")))
    assert status == 200
    # A certificate another CA signed is no certificate here.
    stranger = make_certs(certs.directory.parent / "stranger").client("ci")
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        https_get(f"{registry.url}/v2/", client_context(certs.ca, stranger))


def test_optional_client_certificate_is_a_login(
    certs: Certs, registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    config = tmp_path / "registry.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "tls": {"client_ca": str(certs.ca), "client_auth": "optional"},
                "auth": {
                    "htpasswd": str(write_htpasswd(tmp_path / "htpasswd", {"ops": "0ps-Pa55"})),
                    "access": [
                        {"repositories": ["bots/**"], "users": ["ci-bot"], "actions": ["*"]}
                    ],
                },
            }
        )
    )
    registry = registry_factory(certs.server_args("--config", str(config)))
    url = f"{registry.url}/v2/bots/app/blobs/uploads/"

    def post(context: ssl.SSLContext) -> int:
        request = urllib.request.Request(url, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as error:
            return error.code

    assert post(client_context(certs.ca, certs.client("ci-bot"))) == 202
    assert post(client_context(certs.ca)) == 401  # no certificate: a password is needed
    assert post(client_context(certs.ca, certs.client("intruder"))) == 403


# -- rotation -------------------------------------------------------------------------------------


def blob_of(size: int) -> Iterator[bytes]:
    block = hashlib.sha256(b"rotation").digest() * (MIB // 32)
    for _ in range(size // MIB):
        yield block


def push_large_blob(registry: RegistryProcess, certs: Certs, size: int) -> str:
    digest = hashlib.sha256()
    for chunk in blob_of(size):
        digest.update(chunk)
    ref = f"sha256:{digest.hexdigest()}"
    request = urllib.request.Request(
        f"{registry.url}/v2/big/blobs/uploads/?digest={ref}",
        data=blob_of(size),
        method="POST",
        headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=120, context=client_context(certs.ca)) as resp:
        assert resp.status == 201
    return ref


@pytest.mark.parametrize("workers", [1, 2])
def test_rotation_keeps_a_pull_streaming(
    certs: Certs, registry_factory: RegistryFactory, workers: int
) -> None:
    registry = registry_factory(certs.server_args("--workers", str(workers)))
    old_serial = served_serial(registry.port, certs.ca)
    size = 256 * MIB
    ref = push_large_blob(registry, certs, size)
    request = urllib.request.Request(f"{registry.url}/v2/big/blobs/{ref}")
    with urllib.request.urlopen(request, timeout=60, context=client_context(certs.ca)) as pull:
        digest = hashlib.sha256(pull.read(16 * MIB))
        # Renewed while the pull streams: SIGHUP to the registry (its workers hear it too).
        new_serial = certs.write_server(certs.authority.issue_server())
        os.kill(registry.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        seen: set[int] = set()
        while time.monotonic() < deadline:
            # Connections may land on any worker: every one must have the new certificate.
            seen = {served_serial(registry.port, certs.ca) for _ in range(4 * workers)}
            if seen == {new_serial}:
                break
            time.sleep(0.1)
        assert seen == {new_serial}, (old_serial, new_serial, seen)
        while chunk := pull.read(MIB):
            digest.update(chunk)
    assert f"sha256:{digest.hexdigest()}" == ref
    assert registry.proc is not None and registry.proc.poll() is None


def test_renewed_files_are_picked_up_without_a_signal(
    certs: Certs, registry_factory: RegistryFactory
) -> None:
    env = {"NIMBUS_TLS_RELOAD_INTERVAL": "0.2"}
    registry = registry_factory(certs.server_args(), env=env)
    new_serial = certs.write_server(certs.authority.issue_server())
    deadline = time.monotonic() + 20
    while served_serial(registry.port, certs.ca) != new_serial:
        assert time.monotonic() < deadline, "the renewed certificate was never served"
        time.sleep(0.1)


def test_an_expired_renewal_keeps_the_certificate_in_use(
    certs: Certs, registry_factory: RegistryFactory
) -> None:
    registry = registry_factory(certs.server_args())
    serial = served_serial(registry.port, certs.ca)
    certs.write_server(expired(certs.authority))
    os.kill(registry.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "TLS certificate not reloaded" not in registry.log_text():
        assert time.monotonic() < deadline, registry.log_text()[-2000:]
        time.sleep(0.1)
    assert "expired on" in registry.log_text()
    assert served_serial(registry.port, certs.ca) == serial


# -- bad input on the TLS port --------------------------------------------------------------------


def still_serves(registry: RegistryProcess, certs: Certs) -> None:
    assert https_get(f"{registry.url}/v2/", client_context(certs.ca))[0] == 200


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_what_is_not_a_modern_tls_client_is_refused(
    certs: Certs, registry_factory: RegistryFactory
) -> None:
    registry = registry_factory(certs.server_args())
    # Plain HTTP to the TLS port: a 400 saying so (as Go's servers answer), and nothing stored.
    with socket.create_connection(("127.0.0.1", registry.port), timeout=10) as plain:
        plain.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = plain.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert answer.endswith(
        b"Client sent an HTTP request to an HTTPS server: use https:// for this registry.\n"
    )
    blob = os.urandom(1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    put = urllib.request.Request(
        f"http://127.0.0.1:{registry.port}/v2/plain/blobs/uploads/?digest={digest}",
        data=blob,
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(put, timeout=10)
    assert refused.value.code == 400
    assert b"HTTPS server" in refused.value.read()
    status, _, _ = https_get(
        f"https://localhost:{registry.port}/v2/plain/blobs/{digest}", client_context(certs.ca)
    )
    assert status == 404
    # Garbage where a handshake belongs.
    with socket.create_connection(("127.0.0.1", registry.port), timeout=10) as raw:
        raw.sendall(os.urandom(512))
        try:
            raw.recv(4096)
        except ConnectionResetError:
            pass
    # TLS 1.1 is below the minimum (1.2); the client would speak it, the server refuses.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(registry.port, capped_client(certs, ssl.TLSVersion.TLSv1_1))
    # A half-open handshake holds nothing: others are served meanwhile.
    with socket.create_connection(("127.0.0.1", registry.port), timeout=10):
        still_serves(registry, certs)
    still_serves(registry, certs)


def capped_client(certs: Certs, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = client_context(certs.ca)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer what it is capped to
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = version
    return context


def handshake(port: int, context: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return str(tls.version())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_minimum_version_is_the_servers_choice(
    certs: Certs, registry_factory: RegistryFactory
) -> None:
    tls12 = capped_client(certs, ssl.TLSVersion.TLSv1_2)
    assert handshake(registry_factory(certs.server_args()).port, tls12) == "TLSv1.2"
    strict = registry_factory(certs.server_args("--tls-min-version", "1.3"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(strict.port, tls12)
    assert handshake(strict.port, client_context(certs.ca)) == "TLSv1.3"


# -- events ---------------------------------------------------------------------------------------


async def test_push_event_over_https_names_the_certificate_and_scheme(
    certs: Certs, registry_factory: RegistryFactory, nats_url: str
) -> None:
    import nats

    from nimbus import streams
    from proto.nimbus.v1 import events_pb2

    site = f"tls{os.getpid()}"
    optional = ("--tls-client-ca", str(certs.ca), "--tls-client-auth", "optional")
    registry = registry_factory(certs.server_args(*optional, "--nats", nats_url, "--site", site))
    data = b"pushed by a machine with a certificate"
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    request = urllib.request.Request(
        f"{registry.url}/v2/bots/app/blobs/uploads/?digest={digest}", data=data, method="POST"
    )
    context = client_context(certs.ca, certs.client("ci-bot"))
    status, _, _ = await asyncio.to_thread(https_open, request, context)
    assert status == 201
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(
            streams.site_subjects(site), stream=streams.EVENTS_STREAM
        )
        (msg,) = await sub.fetch(1, timeout=20)
        event = events_pb2.Event.FromString(msg.data)
    finally:
        await nc.close()
    assert event.actor.name == "ci-bot"
    assert event.target.url == f"https://{registry.host}/v2/bots/app/blobs/{digest}"


def test_blob_reads_over_tls_whole_and_by_range(
    certs: Certs, registry_factory: RegistryFactory
) -> None:
    # Over TLS blobs leave by the streamed path, not sendfile: the same bytes and ranges.
    registry = registry_factory(certs.server_args())
    size = 3 * MIB + 12345
    ref = push_large_blob(registry, certs, size - size % MIB)
    context = client_context(certs.ca)
    status, headers, body = https_get(f"{registry.url}/v2/big/blobs/{ref}", context)
    assert status == 200 and f"sha256:{hashlib.sha256(body).hexdigest()}" == ref
    assert headers["Content-Length"] == str(len(body))
    status, headers, part = https_get(
        f"{registry.url}/v2/big/blobs/{ref}", context, {"Range": "bytes=1048570-1048589"}
    )
    assert status == 206
    assert headers["Content-Range"] == f"bytes 1048570-1048589/{len(body)}"
    assert part == body[1048570:1048590]
