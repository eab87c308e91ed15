"""Retention over 30 tags pushed and pulled at known times: each keep alone and their union
keep exactly the expected tags, the dry run equals the run, an index keeps its children, a
signature of a kept manifest stays, immutable tags stay; one run at a time across replicas."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import grpc
from google.protobuf.duration_pb2 import Duration

from proto.nimbus.v1 import registry_pb2 as pb
from tests.fixtures.images import make_artifact, make_image, make_multiplatform
from tests.lifecycle.conftest import LifecycleRegistry, admin, oci

REPO = "ci/app"
TAGS = [f"t{i:02d}" for i in range(28)] + ["v1", "v2"]
HOUR = 3600
SIGNATURE = "application/vnd.example.signature.v1"


def _hours(n: float) -> Duration:
    return Duration(seconds=int(n * HOUR))


def _age(path: Path, hours: float) -> None:
    when = time.time() - hours * HOUR
    os.utime(path, (when, when))


async def _dry_run_kept(stub, rule: pb.RetentionRule) -> set[str]:
    policies = pb.LifecyclePolicies(
        immutable=[pb.ImmutableTagRule(pattern=f"{REPO}:t00")], retention=[rule]
    )
    await stub.SetLifecyclePolicies(pb.SetLifecyclePoliciesRequest(policies=policies))
    deleted = set()
    async for progress in stub.RunRetention(pb.RunRetentionRequest(dry_run=True)):
        if progress.HasField("item") and progress.item.kind == pb.RetentionItem.TAG:
            deleted.add(progress.item.tag)
    return (set(TAGS) | {"v-index"}) - deleted


async def _run(stub, dry_run: bool) -> list:
    return [p async for p in stub.RunRetention(pb.RunRetentionRequest(dry_run=dry_run))]


async def test_retention_keeps_exactly_the_union(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession
):
    registry = lifecycle_registry({"pull_flush_interval": 3600})
    client = oci(http, registry)
    root = Path(registry.data_dir) / "repositories" / REPO / "_manifests"
    images = {tag: make_image((300,), seed=100 + i) for i, tag in enumerate(TAGS)}
    for tag, image in images.items():
        await client.push_image(REPO, image, tag)
    index = make_multiplatform((200,), seed=300)
    await client.push_index(REPO, index, "v-index")
    kept_signature = make_artifact(images["v1"].manifest, SIGNATURE, b"v1 signed")
    lost_signature = make_artifact(images["t01"].manifest, SIGNATURE, b"t01 signed")
    await client.push_image(REPO, kept_signature)
    await client.push_image(REPO, lost_signature)
    # Known push times: tag i pushed 100 - 3i hours ago (v2, the newest, 13 hours ago);
    # every manifest pushed two days ago, so untagged ones are old enough to go.
    for i, tag in enumerate(TAGS):
        _age(root / "tags" / tag / "current" / "link", 100 - 3 * i)
    _age(root / "tags" / "v-index" / "current" / "link", 200)
    for link in (root / "revisions").rglob("link"):
        _age(link, 48)
    # Known pulls: t03 and t07 now.
    for tag in ("t03", "t07"):
        assert (await client.manifest(REPO, tag)).status == 200

    async with admin(registry) as stub:
        rule = dict(name="ci", repositories="ci/*")
        alone = {
            "keep_last": (pb.RetentionRule(**rule, keep_last=3), {"v2", "v1", "t27"}),
            "pushed_within": (
                pb.RetentionRule(**rule, pushed_within=_hours(26)),
                {"t25", "t26", "t27", "v1", "v2"},
            ),
            "pulled_within": (pb.RetentionRule(**rule, pulled_within=_hours(1)), {"t03", "t07"}),
            "keep_tags": (pb.RetentionRule(**rule, keep_tags=["v*"]), {"v1", "v2", "v-index"}),
        }
        union: set[str] = set()
        for kind, (one, expected) in alone.items():
            # The immutable tag t00 is kept by every rule.
            assert await _dry_run_kept(stub, one) == expected | {"t00"}, kind
            union |= expected | {"t00"}
        everything = pb.RetentionRule(
            **rule,
            keep_last=3,
            pushed_within=_hours(26),
            pulled_within=_hours(1),
            keep_tags=["v*"],
            untagged_older_than=_hours(24),
        )
        assert await _dry_run_kept(stub, everything) == union

        dry = await _run(stub, dry_run=True)
        real = await _run(stub, dry_run=False)

    def items(run: list) -> list[tuple]:
        return [
            (p.item.kind, p.item.repository, p.item.tag, p.item.digest, p.item.size)
            for p in run
            if p.HasField("item")
        ]

    assert items(dry) == items(real)
    done_dry, done_real = dry[-1].stats, real[-1].stats
    assert done_dry.tags_deleted == done_real.tags_deleted == len(TAGS) + 1 - len(union)
    assert done_dry.manifests_deleted == done_real.manifests_deleted > 0
    assert done_dry.bytes_freed == done_real.bytes_freed > 0
    assert real[-1].phase == pb.RetentionProgress.DONE and not real[-1].dry_run

    tags = (await client.request("GET", f"/v2/{REPO}/tags/list")).json()["tags"]
    assert set(tags) == union
    deleted_manifests = {
        p.item.digest
        for p in real
        if p.HasField("item") and p.item.kind == pb.RetentionItem.MANIFEST
    }
    # The manifests of deleted tags went; kept ones, the index's children and the kept
    # signature stay; the signature of a deleted manifest went with it.
    for tag, image in images.items():
        status = (await client.manifest(REPO, image.digest)).status
        assert status == (200 if tag in union else 404), tag
        assert (image.digest in deleted_manifests) == (tag not in union)
    for child in index.images:
        assert (await client.manifest(REPO, child.digest)).status == 200
    assert (await client.manifest(REPO, kept_signature.digest)).status == 200
    assert (await client.manifest(REPO, lost_signature.digest)).status == 404
    referrers = (await client.request("GET", f"/v2/{REPO}/referrers/{images['v1'].digest}")).json()
    assert [m["digest"] for m in referrers["manifests"]] == [kept_signature.digest]


async def test_one_run_at_a_time_across_replicas(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession, tmp_path: Path
):
    rules = {"policies": {"retention": [{"repositories": "ci/*", "keep_last": 1}]}}
    shared = tmp_path / "shared"
    one = lifecycle_registry(rules, data_dir=shared)
    two = lifecycle_registry(rules, data_dir=shared)
    for i in range(3):
        await oci(http, one).push_image("ci/lease", make_image((100,), seed=400 + i), f"t{i}")

    async def run(registry) -> str:
        async with admin(registry) as stub:
            try:
                await _run(stub, dry_run=True)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
                assert "in progress" in error.details() or "at once" in error.details()
                return "refused"
            return "ran"

    # Twice at once on one replica, and on two replicas over one store: never both.
    assert sorted(await asyncio.gather(run(one), run(one))) == ["ran", "refused"]
    assert sorted(await asyncio.gather(run(one), run(two))) == ["ran", "refused"]
    # Once the first is done the lease is free again.
    assert await run(two) == "ran"
