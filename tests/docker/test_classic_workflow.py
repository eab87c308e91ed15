"""The classic workflow with the real Docker engine: tag, push, remove, pull back the same
image, by `localhost` and by IP, anonymously and after `docker login`."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest

from tests.fixtures.docker import DockerEngine
from tests.fixtures.registry import RegistryFactory, RegistryProcess
from tests.fixtures.users import write_htpasswd

USER, PASSWORD = "builder", "bu1lder-Pa55"


def rootfs_tar(path: Path, files: dict[str, bytes]) -> Path:
    """A tiny root filesystem as `docker import` takes it."""
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def build_image(docker: DockerEngine, workdir: Path, tag: str, marker: str) -> str:
    """A two-layer image (an imported base and a COPY on top); its image ID."""
    base = rootfs_tar(workdir / "base.tar", {"etc/motd": f"base of {marker}\n".encode()})
    docker.run("import", str(base), f"{tag}-base")
    context = workdir / "context"
    context.mkdir()
    (context / "layer.txt").write_text(f"second layer of {marker}\n")
    (context / "Dockerfile").write_text(f"FROM {tag}-base\nCOPY layer.txt /layer.txt\n")
    docker.run("build", "--quiet", "--tag", tag, str(context))
    return docker.image_id(tag)


def pushed_digest(output: str) -> str:
    """The manifest digest `docker push` reports (`latest: digest: sha256:... size: N`)."""
    for line in output.splitlines():
        if "digest: " in line:
            return line.split("digest: ", 1)[1].split()[0]
    raise AssertionError(f"no digest in push output:\n{output}")


def registry_manifest_digest(
    registry: RegistryProcess, name: str, tag: str, login: tuple[str, str] | None = None
) -> str:
    headers = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    if login is not None:
        headers["Authorization"] = "Basic " + b64encode(":".join(login).encode()).decode()
    request = urllib.request.Request(
        f"{registry.url}/v2/{name}/manifests/{tag}", method="HEAD", headers=headers
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.headers["Docker-Content-Digest"])


def test_tag_push_remove_pull(
    docker_engine: DockerEngine, registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    registry = registry_factory()
    image_id = build_image(docker_engine, tmp_path, "my-image", "the classic workflow")
    by_name = f"localhost:{registry.port}/my-image"
    docker_engine.run("tag", "my-image", by_name)
    digest = pushed_digest(docker_engine.run("push", by_name).stdout)
    assert registry_manifest_digest(registry, "my-image", "latest") == digest

    docker_engine.run("rmi", "my-image", by_name, "my-image-base")
    assert docker_engine.run("image", "inspect", by_name, check=False).returncode != 0
    docker_engine.run("pull", by_name)
    assert docker_engine.image_id(by_name) == image_id
    # And by address, as another host would reach it.
    by_ip = f"127.0.0.1:{registry.port}/my-image"
    docker_engine.run("pull", by_ip)
    assert docker_engine.image_id(by_ip) == image_id
    repo_digests = json.loads(
        docker_engine.run("image", "inspect", "--format", "{{json .RepoDigests}}", by_ip).stdout
    )
    assert f"{by_ip}@{digest}" in repo_digests
    docker_engine.run("rmi", by_name, by_ip)


def test_login_then_push_and_pull(
    docker_engine: DockerEngine, registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {USER: PASSWORD})
    registry = registry_factory(["--htpasswd", str(htpasswd)])
    image_id = build_image(docker_engine, tmp_path, "team-app", "a private registry")
    reference = f"localhost:{registry.port}/team/app:v1"
    docker_engine.run("tag", "team-app", reference)

    refused = docker_engine.run("push", reference, check=False)
    assert refused.returncode != 0
    assert "no basic auth credentials" in refused.stderr + refused.stdout

    wrong = docker_engine.run(
        "login", "-u", USER, "--password-stdin", f"localhost:{registry.port}",
        input="not-the-password", check=False,
    )  # fmt: skip
    assert wrong.returncode != 0
    assert "unauthorized" in (wrong.stderr + wrong.stdout).lower()

    login = docker_engine.run(
        "login", "-u", USER, "--password-stdin", f"localhost:{registry.port}", input=PASSWORD
    )
    assert "Login Succeeded" in login.stdout
    digest = pushed_digest(docker_engine.run("push", reference).stdout)
    assert registry_manifest_digest(registry, "team/app", "v1", (USER, PASSWORD)) == digest
    docker_engine.run("rmi", "team-app", reference, "team-app-base")
    docker_engine.run("pull", reference)
    assert docker_engine.image_id(reference) == image_id

    # Logged out, the image is private again.
    docker_engine.run("logout", f"localhost:{registry.port}")
    docker_engine.run("rmi", reference)
    anonymous = docker_engine.run("pull", reference, check=False)
    assert anonymous.returncode != 0
    with pytest.raises(urllib.error.HTTPError) as denied:
        registry_manifest_digest(registry, "team/app", "v1")
    assert denied.value.code == 401
