"""Pulling from another host by address, over HTTPS with verification on: the real Docker
engine trusting the CA through `/etc/docker/certs.d/HOST:PORT/ca.crt` (a directory of this
test's own address and port, removed after), and skopeo run inside another network namespace.

Docker skips verification for loopback addresses (it treats 127.0.0.0/8 as insecure), so the
registry is reached on a veth address, as from another machine."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.test_classic_workflow import build_image
from tests.fixtures.docker import DockerEngine
from tests.fixtures.images import make_image, write_oci_layout
from tests.fixtures.netns import OtherHost
from tests.fixtures.registry import RegistryProcess
from tests.fixtures.users import write_htpasswd
from tests.tls.conftest import Certs

CERTS_D = Path("/etc/docker/certs.d")
USER, PASSWORD = "deployer", "dep1oyer-Pa55"


@pytest.fixture
def registry_on_the_link(
    certs: Certs, other_host: OtherHost, tmp_path: Path
) -> Iterator[RegistryProcess]:
    """An HTTPS registry with a login, on every interface, its certificate naming the link."""
    certs.write_server(certs.authority.issue_server(addresses=[other_host.local_address]))
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {USER: PASSWORD})
    registry = RegistryProcess(tmp_path / "data", certs.server_args("--htpasswd", str(htpasswd)))
    registry.extra_args += ["--listen", f"0.0.0.0:{registry.port}"]
    yield registry.start()
    registry.stop()


@pytest.fixture
def docker_trust(registry_on_the_link: RegistryProcess, other_host: OtherHost) -> Iterator[Path]:
    trust = CERTS_D / f"{other_host.local_address}:{registry_on_the_link.port}"
    try:
        trust.mkdir(parents=True)
    except OSError as exc:
        pytest.skip(f"cannot give docker the CA in {CERTS_D}: {exc.strerror}")
    yield trust
    shutil.rmtree(trust, ignore_errors=True)


def test_docker_verifies_then_logs_in_pushes_and_pulls(
    docker_engine: DockerEngine,
    registry_on_the_link: RegistryProcess,
    other_host: OtherHost,
    docker_trust: Path,
    certs: Certs,
    tmp_path: Path,
) -> None:
    host = f"{other_host.local_address}:{registry_on_the_link.port}"
    login = ("login", "-u", USER, "--password-stdin", host)
    untrusted = docker_engine.run(*login, input=PASSWORD, check=False)
    assert untrusted.returncode != 0
    assert "certificate signed by unknown authority" in untrusted.stderr

    (docker_trust / "ca.crt").write_bytes(certs.authority.cert_pem)
    docker_engine.run(*login, input=PASSWORD)
    image_id = build_image(docker_engine, tmp_path, "secure-app", "HTTPS")
    reference = f"{host}/secure/app:v1"
    docker_engine.run("tag", "secure-app", reference)
    docker_engine.run("push", reference)
    docker_engine.run("rmi", "secure-app", reference, "secure-app-base")
    docker_engine.run("pull", reference)
    assert docker_engine.image_id(reference) == image_id
    docker_engine.run("rmi", reference)
    docker_engine.run("logout", host)


def test_skopeo_on_another_host_pulls_by_address(
    registry_on_the_link: RegistryProcess, other_host: OtherHost, certs: Certs, tmp_path: Path
) -> None:
    image = make_image((50_000,), seed=121)
    layout = write_oci_layout(tmp_path / "layout", {"v1": image})
    creds = f"{USER}:{PASSWORD}"
    target = f"docker://{other_host.local_address}:{registry_on_the_link.port}/far/app:v1"
    skopeo = ("skopeo", "--insecure-policy")
    pushed = other_host.run(
        *skopeo, "copy", f"--dest-cert-dir={certs.cert_dir}", f"--dest-creds={creds}",
        layout.ref("v1"), target,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    pulled = other_host.run(
        *skopeo, "inspect", "--raw", f"--cert-dir={certs.cert_dir}", f"--creds={creds}", target
    )
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.encode() == image.manifest.data
    # The other host without the CA refuses the registry's certificate.
    refused = other_host.run(*skopeo, "inspect", "--raw", f"--creds={creds}", target)
    assert refused.returncode != 0
    assert "certificate signed by unknown authority" in refused.stderr
