"""SIGKILL in the middle of a burst of small pushes: every push the registry acknowledged is
whole after the restart (its tag, its manifest and every blob, each with the right bytes), and
the registry keeps taking pushes."""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest

from nimbus.oci import mediatypes as mt
from nimbus.oci.client import RegistryClient
from nimbus.oci.digests import digest_of
from nimbus.oci.documents import Descriptor
from nimbus.oci.errors import RegistryError
from tests.fixtures.registry import RegistryFactory

IN_FLIGHT = 16
KILL_AFTER = 40  # acknowledged pushes before the kill


def small_image(i: int) -> tuple[list[bytes], bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": i}).encode()
    layer = os.urandom(8192)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": Descriptor(mt.OCI_CONFIG, digest_of(config), len(config)).to_json(),
            "layers": [Descriptor(mt.OCI_LAYER, digest_of(layer), len(layer)).to_json()],
        }
    ).encode()
    return [config, layer], manifest


@pytest.mark.parametrize("driver", ["filesystem", "s3"])
async def test_every_acknowledged_small_push_is_whole_after_a_sigkill(
    registry_factory: RegistryFactory, driver: str
) -> None:
    registry = registry_factory(storage=driver)
    images = {f"v{i}": small_image(i) for i in range(400)}
    acknowledged: dict[str, str] = {}
    killed = asyncio.Event()

    async def pusher(client: RegistryClient, tags: list[str]) -> None:
        for tag in tags:
            if killed.is_set():
                return
            blobs, manifest = images[tag]
            try:
                for data in blobs:
                    await client.push_blob("burst/app", data)
                pushed = await client.put_manifest("burst/app", tag, manifest, mt.OCI_MANIFEST)
            except (RegistryError, aiohttp.ClientError, OSError, TimeoutError):
                return  # cut off by the kill: not acknowledged, nothing is promised
            acknowledged[tag] = pushed.digest
            if len(acknowledged) >= KILL_AFTER and not killed.is_set():
                killed.set()
                registry.kill()  # pushes of the other clients are mid-request now

    tags = list(images)
    async with RegistryClient(registry.url, read_timeout=10) as client:
        await asyncio.gather(*(pusher(client, tags[i::IN_FLIGHT]) for i in range(IN_FLIGHT)))
    assert killed.is_set() and len(acknowledged) >= KILL_AFTER

    registry.start()
    async with RegistryClient(registry.url) as client:
        for tag, digest in acknowledged.items():
            blobs, manifest = images[tag]
            got = await client.get_manifest("burst/app", tag)
            assert got is not None, f"acknowledged {tag} lost"
            assert got.digest == digest and got.data == manifest
            for data in blobs:
                assert await client.get_blob("burst/app", digest_of(data)) == data
        # Still taking pushes, including one of an image the kill cut off.
        unacknowledged = next(t for t in tags if t not in acknowledged)
        blobs, manifest = images[unacknowledged]
        for data in blobs:
            await client.push_blob("burst/app", data)
        await client.put_manifest("burst/app", unacknowledged, manifest, mt.OCI_MANIFEST)
        assert (await client.get_manifest("burst/app", unacknowledged)) is not None
