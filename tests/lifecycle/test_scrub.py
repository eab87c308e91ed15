"""Integrity scrub on both storage drivers: a blob whose bytes are corrupted in storage (on
disk, in the bucket) is found, alone; a dry run only reports it; a run quarantines it, after
which a pull answers the spec's 404 BLOB_UNKNOWN and a re-push of the blob heals it. The rate
limit holds per tick of the limiter (bytes counted, not wall clock)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import aiohttp
import pytest

from proto.nimbus.v1 import registry_pb2 as pb
from tests.fixtures.images import make_image
from tests.fixtures.registry import RegistryProcess
from tests.lifecycle.conftest import TOKEN, LifecycleRegistry, admin, oci
from tests.registry_admin.conftest import run_ctl

REPO = "scrub/app"


def _key(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"blobs/{algorithm}/{hex_part[:2]}/{hex_part}/data"


async def _corrupt(registry: RegistryProcess, request: pytest.FixtureRequest, digest: str) -> None:
    """Flip the first byte of a stored blob behind the registry's back (same size)."""
    if registry.storage == "filesystem":
        path = Path(registry.data_dir) / _key(digest)
        data = bytearray(path.read_bytes())
        data[0] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    s3 = request.getfixturevalue("s3_server")
    async with s3.client() as client:
        got = await client.get_object(Bucket=registry.s3_bucket, Key=_key(digest))
        data = bytearray(await got["Body"].read())
        data[0] ^= 0xFF
        await client.put_object(Bucket=registry.s3_bucket, Key=_key(digest), Body=bytes(data))


async def _scrub(stub, **request) -> tuple[list, pb.ScrubProgress]:
    messages = [m async for m in stub.RunScrub(pb.RunScrubRequest(**request))]
    assert messages[-1].phase == pb.ScrubProgress.DONE
    return [m.item for m in messages if m.HasField("item")], messages[-1]


@pytest.mark.parametrize("storage", ["filesystem", "s3"])
async def test_scrub_quarantines_the_corrupt_blob_and_a_push_heals_it(
    lifecycle_registry: LifecycleRegistry,
    http: aiohttp.ClientSession,
    storage: str,
    request: pytest.FixtureRequest,
):
    registry = lifecycle_registry(storage=storage)
    client = oci(http, registry)
    images = [make_image((3000, 1500), seed=700 + i) for i in range(3)]
    for i, image in enumerate(images):
        await client.push_image(REPO, image, f"v{i}")
    victim = images[1].layers[0]
    stored_bytes = sum(len(b.data) for image in images for b in [*image.blobs, image.manifest])

    async with admin(registry) as stub:
        clean, done = await _scrub(stub, unlimited=True)
        assert clean == []
        # Three manifests, three configs, six layers: each hashed once.
        assert (done.stats.blobs_checked, done.stats.bytes_hashed) == (12, stored_bytes)
        assert done.stats.manifests_checked == 3 and done.stats.missing == 0

        await _corrupt(registry, request, victim.digest)

        # A dry run finds exactly it, moves nothing.
        found, done = await _scrub(stub, dry_run=True, unlimited=True)
        assert [(i.kind, i.digest, i.quarantined) for i in found] == [
            (pb.ScrubItem.CORRUPT, victim.digest, False)
        ]
        assert found[0].actual_digest != victim.digest and found[0].size == len(victim.data)
        assert done.dry_run and done.stats.corrupt == 1 and done.stats.quarantined == 0
        assert (await client.request("GET", f"/v2/{REPO}/blobs/{victim.digest}")).status == 200

        # A run quarantines it; the manifest that needs it is then reported.
        found, done = await _scrub(stub, unlimited=True)
        assert [(i.kind, i.digest, i.quarantined) for i in found] == [
            (pb.ScrubItem.CORRUPT, victim.digest, True),
            (pb.ScrubItem.MISSING, victim.digest, True),
        ]
        assert found[1].repository == REPO and found[1].manifest == images[1].digest
        assert done.stats.quarantined == 1 and done.stats.missing == 1

        # A pull gets the spec's error; the other images are whole.
        for method in ("GET", "HEAD"):
            reply = await client.request(method, f"/v2/{REPO}/blobs/{victim.digest}")
            if method == "GET":
                reply.expect_error(404, "BLOB_UNKNOWN")
            else:
                assert reply.status == 404
        other = images[0].layers[0]
        assert (await client.request("GET", f"/v2/{REPO}/blobs/{other.digest}")).body == other.data

        # The next push of that digest stores it afresh.
        await client.push_blob(REPO, victim.data)
        healed = await client.request("GET", f"/v2/{REPO}/blobs/{victim.digest}")
        assert healed.status == 200 and healed.body == victim.data
        clean, done = await _scrub(stub, dry_run=True, unlimited=True)
        assert clean == [] and done.stats.bytes_hashed == stored_bytes


async def test_scrub_reads_within_its_rate(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession
):
    registry = lifecycle_registry()
    client = oci(http, registry)
    for i in range(3):
        await client.push_image(REPO, make_image((6000, 2500), seed=800 + i), f"v{i}")
    rate = 16_000
    async with admin(registry) as stub:
        _, done = await _scrub(stub, dry_run=True, rate=rate)
    s = done.stats
    assert s.rate == rate and s.tick_budget == int(rate * s.tick_seconds)
    # No tick read more than its budget, so the whole read spread over enough ticks.
    assert 0 < s.max_tick_bytes <= s.tick_budget
    assert s.bytes_hashed > 25_000
    assert s.ticks >= math.ceil(s.bytes_hashed / s.tick_budget)

    # Without a limit, one tick's budget is no bound on what a tick reads.
    async with admin(registry) as stub:
        _, fast = await _scrub(stub, dry_run=True, unlimited=True)
    assert fast.stats.rate == 0 and fast.stats.bytes_hashed == s.bytes_hashed


async def test_scrub_commands(
    lifecycle_registry: LifecycleRegistry,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
):
    registry = lifecycle_registry()
    client = oci(http, registry)
    image = make_image((2000,), seed=850)
    await client.push_image(REPO, image, "v1")

    def ctl(*args: str):
        return run_ctl("--registry", registry.grpc_address, "--token", TOKEN, *args)

    clean = await ctl("scrub", "dry-run", "--rate", "1MB")
    assert clean.returncode == 0, clean.stderr
    assert "[done] 3 blobs hashed" in clean.stdout and "0 corrupt" in clean.stdout
    assert "per 0.25 s" in clean.stdout  # the rate's figures

    await _corrupt(registry, request, image.layers[0].digest)
    dry = await ctl("scrub", "dry-run", "--unlimited")
    assert dry.returncode == 1 and "corrupt or missing" in dry.stderr
    assert f"found corrupt blob {image.layers[0].digest}" in dry.stdout
    assert (await ctl("scrub", "dry-run", "--unlimited", "--no-fail")).returncode == 0

    ran = await ctl("--json", "scrub", "run", "--unlimited")
    assert ran.returncode == 1
    lines = [json.loads(line) for line in ran.stdout.splitlines()]
    items = [(x["item"]["kind"], x["item"]["quarantined"]) for x in lines if "item" in x]
    assert items == [("CORRUPT", True), ("MISSING", True)]
    assert lines[-1]["phase"] == "DONE" and lines[-1]["stats"]["quarantined"] == 1
    bad = await ctl("scrub", "run", "--rate", "fast")
    assert bad.returncode != 0 and "--rate" in bad.stderr


async def test_scheduled_scrub_quarantines_by_itself(
    lifecycle_registry: LifecycleRegistry,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
):
    registry = lifecycle_registry({"scrub_schedule": "1s", "scrub_rate": 0})
    client = oci(http, registry)
    image = make_image((1200,), seed=870)
    await client.push_image(REPO, image, "v1")
    await _corrupt(registry, request, image.layers[0].digest)
    quarantined = Path(registry.data_dir) / "_lifecycle" / "quarantine"
    entry = quarantined / image.layers[0].digest.replace(":", "-")
    deadline = asyncio.get_running_loop().time() + 60
    while not entry.exists():
        assert asyncio.get_running_loop().time() < deadline, "no scheduled scrub"
        await asyncio.sleep(0.2)
    reply = await client.request("GET", f"/v2/{REPO}/blobs/{image.layers[0].digest}")
    reply.expect_error(404, "BLOB_UNKNOWN")
