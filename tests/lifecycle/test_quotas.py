"""Quotas: a push crossing the limit is refused as early as possible and stores nothing, two
racing pushes cannot both take the last bytes, usage shows in GetStats and the metrics and
drops after deletes plus garbage collection."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import pytest
from google.protobuf.duration_pb2 import Duration

from nimbus.oci.mediatypes import OCTET_STREAM
from proto.nimbus.v1 import registry_pb2 as pb
from tests.fixtures.images import make_image, random_bytes
from tests.fixtures.registry import RegistryProcess
from tests.lifecycle.conftest import LifecycleRegistry, admin, oci

LIMIT = 100_000
RULES = {
    "policies": {"quotas": [{"name": "small", "repositories": "q/*", "bytes": LIMIT, "tags": 2}]}
}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _snapshot(registry: RegistryProcess, s3_server=None) -> object:
    """Everything the registry stores, apart from its own lifecycle records."""
    if registry.storage == "s3":
        keys = {
            k: v for k, v in s3_server.keys(registry.s3_bucket).items() if "_lifecycle" not in k
        }
        return keys, sorted(s3_server.multipart_uploads(registry.s3_bucket))
    root = Path(registry.data_dir)
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file() and "_lifecycle" not in p.parts and "_outbox" not in p.parts
    )


async def _usage(registry: RegistryProcess, name: str):
    async with admin(registry) as stub:
        stats = await stub.GetStats(pb.GetStatsRequest())
    return next(q for q in stats.quotas if q.repository == name)


@pytest.mark.parametrize("storage", ["filesystem", "s3"])
async def test_refused_pushes_store_nothing(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession, storage: str, request
):
    registry = lifecycle_registry(RULES, storage=storage)
    s3 = request.getfixturevalue("s3_server") if storage == "s3" else None
    client = oci(http, registry)
    image = make_image((60_000,), seed=7)
    await client.push_image("q/app", image, "v1")
    used = await _usage(registry, "q/app")
    assert used.bytes_used == sum(b.size for b in image.blobs) + image.manifest.size
    assert used.bytes_limit == LIMIT and used.tags_used == 1 and used.tags_limit == 2

    before = _snapshot(registry, s3)
    big = random_bytes(50_000, seed=8)
    # Monolithic POST: refused before a byte is stored, with usage and limit.
    reply = await client.request(
        "POST",
        f"/v2/q/app/blobs/uploads/?digest={_digest(big)}",
        data=big,
        headers={"Content-Type": OCTET_STREAM},
    )
    reply.expect_error(403, "DENIED")
    message = reply.json()["errors"][0]["message"]
    assert str(used.bytes_used) in message and str(LIMIT) in message and "small" in message
    # A chunked upload: the PATCH that would cross is refused and its session goes.
    location = await client.start_upload("q/app")
    assert (await client.patch(location, big[:20_000], first=0)).status == 202
    (await client.patch(location, big[20_000:], first=20_000)).expect_error(403, "DENIED")
    (await client.request("GET", location)).expect_error(404, "BLOB_UPLOAD_UNKNOWN")
    # A streamed PATCH (no length known until its end) is refused at its end, at the latest.
    location = await client.start_upload("q/app")

    async def stream():
        yield big

    reply = await client.request(
        "PATCH", location, data=stream(), headers={"Content-Type": OCTET_STREAM}
    )
    reply.expect_error(403, "DENIED")
    assert _snapshot(registry, s3) == before

    # The same blob again costs nothing: each blob counts once per repository.
    await client.push_image("q/app", image, "v2")
    # A third tag crosses the tag count, refused at the manifest PUT.
    reply = await client.put_manifest("q/app", "v3", image.manifest)
    reply.expect_error(403, "DENIED")
    assert "2 tags of 2" in reply.json()["errors"][0]["message"]
    # Other repositories are each under their own limit.
    await client.push_image("q/other", image, "v1")
    assert (await _usage(registry, "q/other")).bytes_used == used.bytes_used


async def test_racing_pushes_and_usage_after_gc(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession
):
    registry = lifecycle_registry(RULES)
    client = oci(http, registry)
    base = make_image((50_000,), seed=9)
    await client.push_image("q/race", base, "base")
    used = (await _usage(registry, "q/race")).bytes_used
    room = LIMIT - used
    # Two uploads of more than half the room each: both fit alone, not together.
    blobs = [random_bytes(room // 2 + 1000, seed=s) for s in (10, 11)]
    locations = [await client.start_upload("q/race") for _ in blobs]
    for location, data in zip(locations, blobs, strict=True):
        assert (await client.patch(location, data, first=0)).status == 202
    replies = await asyncio.gather(
        *(client.finish(loc, _digest(data)) for loc, data in zip(locations, blobs, strict=True))
    )
    statuses = sorted(r.status for r in replies)
    assert statuses == [201, 403], statuses
    after = (await _usage(registry, "q/race")).bytes_used
    assert after == used + len(blobs[0]) and after <= LIMIT

    # The gauge of the metrics endpoint says the same.
    metrics = (await client.request("GET", "/metrics")).body.decode()
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith("nimbus_quota_used_bytes{") and 'repository="q/race"' in x
    )
    assert float(line.rsplit(" ", 1)[1]) == after

    # Deleting the image and collecting frees its bytes from the usage.
    reply = await client.request("DELETE", f"/v2/q/race/manifests/{base.digest}")
    assert reply.status == 202
    async with admin(registry) as stub:
        async for _ in stub.GarbageCollect(
            pb.GarbageCollectRequest(grace_period=Duration(seconds=0))
        ):
            pass
    final = (await _usage(registry, "q/race")).bytes_used
    assert final == 0, final
