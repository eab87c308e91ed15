"""Fixtures of the replicator tests: pushing images with skopeo and checking them at peers."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from replicator.oci.client import RegistryClient
from tests.fixtures.images import Image, ImageIndex, OCILayout


def skopeo_copy(layout: OCILayout, tag: str, host: str, repository: str) -> None:
    """`skopeo copy --all` of one tag of a layout to ``host/repository:tag``."""
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--all",
            "--quiet",
            "--dest-tls-verify=false",
            layout.ref(tag),
            f"docker://{host}/{repository}:{tag}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


async def push_image(client: RegistryClient, repository: str, tag: str, image: Image) -> None:
    """Push blobs, then the manifest by tag (fast, in process; skopeo where the client matters)."""
    for blob in image.blobs:
        await client.push_blob(repository, blob.data)
    await client.put_manifest(repository, tag, image.manifest.data, image.manifest.media_type)


async def push_by_digest(client: RegistryClient, repository: str, image: Image) -> None:
    for blob in image.blobs:
        await client.push_blob(repository, blob.data)
    await client.put_manifest(
        repository, image.digest, image.manifest.data, image.manifest.media_type
    )


def digests_of(item: Image | ImageIndex) -> list[str]:
    """Every manifest and blob digest of an image or index."""
    images = item.images if isinstance(item, ImageIndex) else (item,)
    found = [item.digest] if isinstance(item, ImageIndex) else []
    for image in images:
        found.append(image.digest)
        found.extend(blob.digest for blob in image.blobs)
    return found


async def assert_complete(
    client: RegistryClient, repository: str, tag: str, item: Image | ImageIndex
) -> None:
    """The tag resolves to the same digest and every manifest and blob is there, byte-equal."""
    head = await client.head_manifest(repository, tag)
    assert head is not None, f"{repository}:{tag} missing at {client.base_url}"
    assert head.digest == item.digest
    images = item.images if isinstance(item, ImageIndex) else (item,)
    for image in images:
        got = await client.get_manifest(repository, image.digest)
        assert got is not None and got.data == image.manifest.data
        for blob in image.blobs:
            assert await client.blob_size(repository, blob.digest) == blob.size


ClientFactory = Callable[..., RegistryClient]


@pytest.fixture
async def oci_client() -> AsyncIterator[ClientFactory]:
    """Opens RegistryClients for a test (``oci_client(url)``) and closes them at the end."""
    opened: list[RegistryClient] = []

    def make(url: str, **kwargs: Any) -> RegistryClient:
        client = RegistryClient(url, **kwargs)
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.close()
