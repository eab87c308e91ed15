"""Debian's skopeo as the client: copy round trips, --all, v2s2, inspect, list-tags, delete."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.images import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    ImageIndex,
    OCILayout,
    make_image,
    make_multiplatform,
    write_oci_layout,
)
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")

# Layer sizes: several gzip layers, one over a megabyte so uploads take more than one write.
LAYERS = (300_000, 1_500_000, 20_000, 700_000)


def skopeo(*args: str) -> str:
    result = subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"skopeo {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def push(source: str, registry: RegistryProcess, ref: str, *extra: str) -> None:
    skopeo("copy", "--dest-tls-verify=false", *extra, source, f"docker://{registry.host}/{ref}")


def pull(registry: RegistryProcess, ref: str, dest: str, *extra: str) -> None:
    skopeo("copy", "--src-tls-verify=false", *extra, f"docker://{registry.host}/{ref}", dest)


def layout_digests(path: Path) -> dict[str, bytes]:
    """Every blob of an OCI layout, verified against its file name."""
    found = {}
    for file in (path / "blobs" / "sha256").iterdir():
        data = file.read_bytes()
        assert hashlib.sha256(data).hexdigest() == file.name
        found[f"sha256:{file.name}"] = data
    return found


def the_image(layout: OCILayout) -> Image:
    image = layout.tags["v1"]
    assert isinstance(image, Image)
    return image


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> OCILayout:
    return write_oci_layout(
        tmp_path_factory.mktemp("layout") / "src",
        {
            "v1": make_image(LAYERS, seed=90),
            "multi": make_multiplatform((200_000, 400_000), seed=91),
        },
    )


async def test_copy_round_trip_keeps_every_blob(
    module_registry: RegistryProcess, client: OCIClient, layout: OCILayout, tmp_path: Path
) -> None:
    image = the_image(layout)
    push(layout.ref("v1"), module_registry, "skopeo/app:v1")

    got = await client.manifest("skopeo/app", "v1", accept=[OCI_MANIFEST])
    assert got.status == 200
    assert got.body == image.manifest.data  # no conversion: the manifest arrives byte for byte
    assert got.headers["Docker-Content-Digest"] == image.digest

    out = tmp_path / "pulled"
    pull(module_registry, "skopeo/app:v1", f"oci:{out}:v1")
    pulled = layout_digests(out)
    source = {blob.digest: blob.data for blob in (*image.blobs, image.manifest)}
    assert set(source) <= set(pulled)
    for digest, data in source.items():
        assert pulled[digest] == data, digest


async def test_copy_all_of_a_two_platform_index(
    module_registry: RegistryProcess, client: OCIClient, layout: OCILayout, tmp_path: Path
) -> None:
    index = layout.tags["multi"]
    assert isinstance(index, ImageIndex)
    push(layout.ref("multi"), module_registry, "skopeo/multi:latest", "--all")

    got = await client.manifest("skopeo/multi", "latest", accept=[OCI_INDEX])
    assert got.status == 200
    assert got.body == index.manifest.data
    assert got.headers["Content-Type"] == OCI_INDEX
    assert got.headers["Docker-Content-Digest"] == index.digest

    out = tmp_path / "pulled"
    pull(module_registry, "skopeo/multi:latest", f"oci:{out}:latest", "--all")
    pulled = layout_digests(out)
    expected = layout.all_blobs()
    index_blobs = {index.digest}
    for image in index.images:
        index_blobs |= {image.digest, *(b.digest for b in image.blobs)}
    for digest in index_blobs:
        assert pulled[digest] == expected[digest].data, digest

    # Each platform on its own, the way a runtime pulls it.
    for arch, image in zip(("amd64", "arm64"), index.images, strict=True):
        inspected = json.loads(
            skopeo(
                "inspect",
                "--tls-verify=false",
                "--override-os=linux",
                f"--override-arch={arch}",
                f"docker://{module_registry.host}/skopeo/multi:latest",
            )
        )
        assert inspected["Digest"] == index.digest
        assert inspected["Architecture"] == arch
        assert inspected["Layers"] == [layer.digest for layer in image.layers]


async def test_copy_with_format_v2s2(
    module_registry: RegistryProcess, client: OCIClient, layout: OCILayout, tmp_path: Path
) -> None:
    image = the_image(layout)
    push(layout.ref("v1"), module_registry, "skopeo/docker:v1", "--format", "v2s2")
    got = await client.manifest("skopeo/docker", "v1", accept=[DOCKER_MANIFEST])
    assert got.status == 200
    assert got.headers["Content-Type"] == DOCKER_MANIFEST
    manifest = got.json()
    assert manifest["mediaType"] == DOCKER_MANIFEST
    digest = "sha256:" + hashlib.sha256(got.body).hexdigest()
    assert got.headers["Docker-Content-Digest"] == digest
    assert manifest["config"]["digest"] == image.config.digest
    layer_digests = [layer.digest for layer in image.layers]
    assert [layer["digest"] for layer in manifest["layers"]] == layer_digests

    out = tmp_path / "pulled"
    pull(module_registry, "skopeo/docker:v1", f"dir:{out}")
    for blob in image.blobs:
        assert (out / blob.digest.split(":", 1)[1]).read_bytes() == blob.data


def test_inspect(module_registry: RegistryProcess, layout: OCILayout) -> None:
    image = the_image(layout)
    push(layout.ref("v1"), module_registry, "skopeo/inspect:v1")
    ref = f"docker://{module_registry.host}/skopeo/inspect:v1"
    inspected: dict[str, Any] = json.loads(skopeo("inspect", "--tls-verify=false", ref))
    assert inspected["Digest"] == image.digest
    assert inspected["Layers"] == [layer.digest for layer in image.layers]
    assert inspected["Architecture"] == "amd64"
    assert inspected["RepoTags"] == ["v1"]
    raw = skopeo("inspect", "--tls-verify=false", "--raw", ref)
    assert raw.encode() == image.manifest.data
    config = skopeo("inspect", "--tls-verify=false", "--config", "--raw", ref)
    assert config.encode() == image.config.data


def test_list_tags(module_registry: RegistryProcess, layout: OCILayout) -> None:
    for tag in ("v1", "v2", "latest"):
        push(layout.ref("v1"), module_registry, f"skopeo/tags:{tag}")
    listed = json.loads(
        skopeo("list-tags", "--tls-verify=false", f"docker://{module_registry.host}/skopeo/tags")
    )
    assert listed["Repository"].endswith("skopeo/tags")
    assert listed["Tags"] == ["latest", "v1", "v2"]


async def test_delete(
    module_registry: RegistryProcess, client: OCIClient, layout: OCILayout
) -> None:
    image = the_image(layout)
    push(layout.ref("v1"), module_registry, "skopeo/delete:v1")
    push(layout.ref("v1"), module_registry, "skopeo/delete:also")
    skopeo("delete", "--tls-verify=false", f"docker://{module_registry.host}/skopeo/delete:v1")
    # skopeo deletes the manifest by digest: every tag pointing to it goes with it.
    for reference in ("v1", "also", image.digest):
        gone = await client.manifest("skopeo/delete", reference)
        assert gone.status == 404
        assert gone.error_codes == ["MANIFEST_UNKNOWN"]
    result = await asyncio.to_thread(
        subprocess.run,
        [
            "skopeo",
            "inspect",
            "--tls-verify=false",
            f"docker://{module_registry.host}/skopeo/delete:v1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    # The blobs stay (collection is a separate step), so a re-push is cheap and works.
    push(layout.ref("v1"), module_registry, "skopeo/delete:v1")
    assert (await client.manifest("skopeo/delete", "v1", accept=[OCI_MANIFEST])).status == 200
