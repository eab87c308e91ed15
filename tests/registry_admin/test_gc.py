"""Garbage collection on a live registry: exactly the unreferenced content goes, pushes survive."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nimbus.grpcclient import open_channel
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc
from tests.fixtures.images import (
    OCI_CONFIG,
    OCI_MANIFEST,
    Blob,
    Image,
    canonical_json,
    make_artifact,
    make_blob,
    make_image,
    make_layer,
    make_multiplatform,
    sha256,
)
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient
from tests.registry_admin.conftest import TOKEN, start_registry

Phase = pb.GarbageCollectProgress.Phase
Kind = pb.GarbageCollectItem.Kind
HOUR = 3600


def _duration(seconds: int) -> Any:
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=seconds)


def blobs_on_disk(data_dir: Path) -> set[str]:
    root = data_dir / "blobs" / "sha256"
    return {f"sha256:{p.parent.name}" for p in root.glob("*/*/data")}


def backdate(data_dir: Path, seconds: int) -> None:
    """Make everything stored so far look `seconds` old."""
    when = time.time() - seconds
    for directory, _, files in os.walk(data_dir):
        for name in [*files, "."]:
            os.utime(os.path.join(directory, name), (when, when))


def image_of(layers: list[Blob], seed: int) -> Image:
    """An image made of exactly these layers."""
    config = Blob(OCI_CONFIG, canonical_json({"architecture": "amd64", "os": "linux", "n": seed}))
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    return Image(config, tuple(layers), Blob(OCI_MANIFEST, canonical_json(doc)))


async def collect(reg: RegistryProcess, **request: Any) -> list[Any]:
    async with open_channel(reg.grpc_address, TOKEN) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        return [m async for m in stub.GarbageCollect(pb.GarbageCollectRequest(**request))]


def removed(messages: list[Any], kind: int) -> set[str]:
    items = [m.item for m in messages if m.HasField("item") and m.item.kind == kind]
    return {i.upload_id if kind == Kind.UPLOAD else i.digest for i in items}


async def pullable(client: OCIClient, name: str, image: Image, reference: str) -> None:
    reply = await client.manifest(name, reference)
    assert reply.status == 200, (name, reference, reply.status)
    assert sha256(reply.body) == image.digest
    for blob in image.blobs:
        reply = await client.blob(name, blob.digest)
        assert reply.status == 200, (name, blob.digest, reply.status)
        assert sha256(reply.body) == blob.digest


def upload_id(location: str) -> str:
    return location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[1]


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def test_removes_exactly_the_unreferenced(tmp_path: Path, http: aiohttp.ClientSession):
    reg = start_registry(tmp_path / "data")
    client = OCIClient(http, reg.url)
    try:
        shared = make_image((1200, 800), seed=1)
        await client.push_image("app/one", shared, "v1")
        await client.push_image("app/two", shared, "v1")  # same blobs, another repository
        gone = make_image((900, 1100), seed=2)
        await client.push_image("app/one", gone, "old")
        index = make_multiplatform((600,), seed=3)
        await client.push_index("app/multi", index, "latest")
        orphan = make_blob(1500, seed=4)
        await client.push_blob("app/one", orphan.data)
        stale = await client.start_upload("app/one")
        assert (await client.patch(stale, b"x" * 3000)).status == 202
        stale_only_repo = await client.start_upload("never/pushed")
        async with open_channel(reg.grpc_address, TOKEN) as channel:
            admin = registry_pb2_grpc.RegistryStub(channel)
            await admin.DeleteManifest(
                pb.DeleteManifestRequest(repository="app/one", digest=shared.digest)
            )
            await admin.DeleteManifest(
                pb.DeleteManifestRequest(repository="app/one", digest=gone.digest)
            )
        backdate(reg.data_dir, 2 * HOUR)
        # Pushed just now: unreferenced, but a push may be about to reference them.
        fresh = make_blob(700, seed=5)
        await client.push_blob("app/one", fresh.data)
        fresh_upload = await client.start_upload("app/one")

        expected = {gone.digest, *(b.digest for b in gone.blobs), orphan.digest}
        expected_uploads = {upload_id(stale), upload_id(stale_only_repo)}
        freed = sum(b.size for b in (gone.manifest, *gone.blobs, orphan))
        before = blobs_on_disk(reg.data_dir)
        assert expected | {fresh.digest} <= before

        dry = await collect(reg, dry_run=True, upload_max_age=_duration(HOUR))
        assert removed(dry, Kind.BLOB) == expected
        assert removed(dry, Kind.UPLOAD) == expected_uploads
        assert all(m.dry_run for m in dry)
        assert dry[-1].phase == Phase.DONE
        assert dry[-1].stats.bytes_freed == freed
        assert blobs_on_disk(reg.data_dir) == before
        assert (await client.request("GET", stale)).status == 204

        real = await collect(reg, upload_max_age=_duration(HOUR))
        phases = [m.phase for m in real]
        assert phases == sorted(phases), "phases run in order"
        assert {Phase.MARK, Phase.SWEEP_BLOBS, Phase.SWEEP_UPLOADS} <= set(phases)
        assert removed(real, Kind.BLOB) == expected
        assert removed(real, Kind.UPLOAD) == expected_uploads
        done = real[-1]
        assert done.phase == Phase.DONE and not done.dry_run
        assert done.stats.blobs_deleted == len(expected)
        assert done.stats.bytes_freed == freed
        assert done.stats.uploads_deleted == 2
        assert done.stats.blobs_kept_recent == 1  # the fresh blob
        assert blobs_on_disk(reg.data_dir) == before - expected

        await pullable(client, "app/two", shared, "v1")
        for image in index.images:
            await pullable(client, "app/multi", image, image.digest)
        assert (await client.manifest("app/multi", "latest")).status == 200
        assert (await client.blob("app/one", fresh.digest)).status == 200
        assert (await client.blob("app/one", orphan.digest)).status == 404
        assert (await client.request("GET", stale)).status == 404
        assert (await client.request("GET", fresh_upload)).status == 204
        assert not (reg.data_dir / "_gc" / "trash").exists() or not any(
            (reg.data_dir / "_gc" / "trash").iterdir()
        )

        async with open_channel(reg.grpc_address, TOKEN) as channel:
            stats = await registry_pb2_grpc.RegistryStub(channel).GetStats(pb.GetStatsRequest())
        assert stats.last_gc.blobs_deleted == len(expected)
        assert stats.blobs == len(before - expected)

        # A second collection finds nothing more to do.
        again = await collect(reg, upload_max_age=_duration(HOUR))
        assert removed(again, Kind.BLOB) == set()
        assert blobs_on_disk(reg.data_dir) == before - expected
    finally:
        reg.stop()


async def test_delete_untagged_keeps_what_tags_reach(tmp_path: Path, http: aiohttp.ClientSession):
    reg = start_registry(tmp_path / "data")
    client = OCIClient(http, reg.url)
    try:
        tagged = make_image((500,), seed=11)
        await client.push_image("app", tagged, "v1")
        signature = make_artifact(tagged.manifest, "application/vnd.example.sig", b"sig-11")
        await client.push_image("app", signature)  # untagged, but refers to a tagged image
        index = make_multiplatform((400,), seed=12)
        await client.push_index("app", index, "multi")  # its children are untagged
        untagged = make_image((450,), seed=13)
        await client.push_image("app", untagged)  # by digest only
        backdate(reg.data_dir, 2 * HOUR)
        young = make_image((300,), seed=14)
        await client.push_image("app", young)  # untagged, but may be tagged in a moment

        messages = await collect(reg, delete_untagged=True, grace_period=_duration(HOUR))
        assert removed(messages, Kind.MANIFEST) == {untagged.digest}
        assert removed(messages, Kind.BLOB) == {
            untagged.digest,
            *(b.digest for b in untagged.blobs),
        }
        assert (await client.manifest("app", untagged.digest)).status == 404
        await pullable(client, "app", tagged, "v1")
        await pullable(client, "app", signature, signature.digest)
        await pullable(client, "app", young, young.digest)
        for image in index.images:
            await pullable(client, "app", image, image.digest)
        reply = await client.request("GET", f"/v2/app/referrers/{tagged.digest}")
        assert [m["digest"] for m in reply.json()["manifests"]] == [signature.digest]
    finally:
        reg.stop()


async def test_pushes_during_collection_are_not_broken(tmp_path: Path, http: aiohttp.ClientSession):
    reg = start_registry(tmp_path / "data")
    client = OCIClient(http, reg.url)
    grace = _duration(60)  # longer than any push here takes
    try:
        # Old content nothing references: half of it will be pushed again during collections.
        orphans = [make_layer(800 + i, seed=100 + i)[0] for i in range(12)]
        for blob in orphans:
            await client.push_blob("old/orphans", blob.data)
        backdate(reg.data_dir, 2 * HOUR)
        reused, unused = orphans[:6], orphans[6:]

        # A push in progress: a chunked upload started, then a collection.
        slow_layer = make_layer(5000, seed=200)[0]
        slow = image_of([slow_layer, reused[0]], seed=200)
        location = await client.start_upload("live/slow")
        assert (await client.patch(location, slow_layer.data[:2000], first=0)).status == 202
        # Every blob any collection here removed: only old orphans may ever be among them.
        taken: set[str] = set()
        taken |= removed(await collect(reg, grace_period=grace), Kind.BLOB)
        reply = await client.finish(location, slow_layer.digest, slow_layer.data[2000:])
        assert reply.status == 201, reply.body
        # Its blob is complete but no manifest references it yet: another collection.
        taken |= removed(await collect(reg, grace_period=grace), Kind.BLOB)
        await client.push_blob("live/slow", slow.config.data)
        await client.push_blob("live/slow", reused[0].data)
        assert (await client.put_manifest("live/slow", "v1", slow.manifest)).status == 201

        # Many pushes, some re-uploading old orphaned content, while collections keep running.
        images = [
            image_of([make_layer(700, seed=300 + i)[0], reused[i % len(reused)]], seed=300 + i)
            for i in range(16)
        ]
        pushing = True

        async def push_all() -> None:
            nonlocal pushing
            try:
                for i, image in enumerate(images):
                    await client.push_image(f"live/app{i % 4}", image, f"v{i}")
            finally:
                pushing = False

        async def collect_while_pushing() -> None:
            runs = 0
            while pushing or runs < 2:
                messages = await collect(reg, grace_period=grace)
                assert messages[-1].phase == Phase.DONE
                taken.update(removed(messages, Kind.BLOB))
                runs += 1

        await asyncio.gather(push_all(), collect_while_pushing())

        await pullable(client, "live/slow", slow, "v1")
        for i, image in enumerate(images):
            await pullable(client, f"live/app{i % 4}", image, f"v{i}")
        # Once the pushes are done, exactly the orphans no push took are left to remove.
        referenced = {slow.digest, *(b.digest for b in slow.blobs)}
        for image in images:
            referenced |= {image.digest, *(b.digest for b in image.blobs)}
        unused_digests = {b.digest for b in unused}
        # Collections running beside the pushes took old orphans and nothing a push brought.
        assert taken <= {b.digest for b in orphans}
        assert blobs_on_disk(reg.data_dir) - referenced <= unused_digests
        final = await collect(reg, grace_period=grace)
        assert final[-1].phase == Phase.DONE
        taken |= removed(final, Kind.BLOB)
        assert blobs_on_disk(reg.data_dir) == referenced
        # Every orphan no push took again was removed, by one collection or another.
        assert unused_digests <= taken
    finally:
        reg.stop()
