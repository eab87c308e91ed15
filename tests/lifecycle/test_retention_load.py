"""Retention while 16 clients push and pull: runs go on during the load, then a garbage
collection with no grace period; no tag pushed outside the rule's scope is lost or moved,
every tag left points where it was last pushed, and every manifest left keeps every blob."""

from __future__ import annotations

import asyncio
import random

import aiohttp
from google.protobuf.duration_pb2 import Duration

from proto.nimbus.v1 import registry_pb2 as pb
from tests.fixtures.images import Image, make_image
from tests.lifecycle.conftest import LifecycleRegistry, admin, oci
from tests.registry.oci_client import OCIClient

CLIENTS = 16
ROUNDS = 10
CHURN = "load/churn"


async def _client(
    client: OCIClient,
    n: int,
    pool: list[Image],
    kept: dict[tuple[str, str], str],
    churned: dict[str, Image],
    started: asyncio.Event,
) -> None:
    rng = random.Random(n)
    for k in range(ROUNDS):
        # Images of a small pool are in scope and out: the same manifests and blobs in both.
        image = rng.choice(pool)
        repo = f"load/keep-{n}"
        await client.push_image(repo, image, f"r{k}")
        kept[(repo, f"r{k}")] = image.digest
        if len(kept) >= CLIENTS:
            started.set()
        # In scope, half from the pool, half of its own (its blobs then go with it); tags of
        # this client alone, so the last push recorded is the last the registry saw.
        churn = rng.choice(pool) if k % 2 else make_image((500,), seed=2000 + 100 * n + k)
        tag = f"c{n}-{rng.randrange(3)}"
        await client.push_image(CHURN, churn, tag)
        churned[tag] = churn
        # A pull of something pushed before, by tag, with one of its layers.
        (pull_repo, pull_tag), digest = rng.choice(sorted(kept.items()))
        reply = await client.manifest(pull_repo, pull_tag)
        assert reply.status == 200 and reply.headers["Docker-Content-Digest"] == digest
        layer = next(i for i in pool if i.digest == digest).layers[0]
        got = await client.request("GET", f"/v2/{pull_repo}/blobs/{layer.digest}")
        assert got.status == 200 and got.body == layer.data


async def test_retention_during_pushes_and_pulls(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession
):
    registry = lifecycle_registry(extra_args=["--gc-grace", "0"])
    client = oci(http, registry)
    pool = [make_image((700, 300), seed=1300 + i) for i in range(6)]
    rule = pb.RetentionRule(
        name="churn", repositories=CHURN, keep_last=3, untagged_older_than=Duration(seconds=0)
    )
    kept: dict[tuple[str, str], str] = {}
    churned: dict[str, Image] = {}
    started = asyncio.Event()
    runs: list[pb.RetentionProgress] = []
    async with admin(registry) as stub:
        await stub.SetLifecyclePolicies(
            pb.SetLifecyclePoliciesRequest(policies=pb.LifecyclePolicies(retention=[rule]))
        )
        load = [
            asyncio.create_task(_client(client, n, pool, kept, churned, started))
            for n in range(CLIENTS)
        ]
        # Some pushes are in before the first run.
        await asyncio.wait_for(started.wait(), 120)
        while not all(t.done() for t in load) or len(runs) < 2:
            async for progress in stub.RunRetention(pb.RunRetentionRequest()):
                if progress.phase == pb.RetentionProgress.DONE:
                    runs.append(progress)
        await asyncio.gather(*load)  # the clients' own checks passed
        # One more run at rest, then the blobs nothing uses go.
        async for progress in stub.RunRetention(pb.RunRetentionRequest()):
            if progress.phase == pb.RetentionProgress.DONE:
                runs.append(progress)
        gc = [
            p
            async for p in stub.GarbageCollect(
                pb.GarbageCollectRequest(grace_period=Duration(seconds=0))
            )
        ]
    assert sum(r.stats.tags_deleted for r in runs) > 0, "retention deleted nothing"
    # The blobs only deleted images had are gone.
    assert gc[-1].stats.blobs_deleted > 0

    by_digest = {image.digest: image for image in [*pool, *churned.values()]}
    # Every tag outside the rule's scope is there, where it was pushed.
    assert len(kept) == CLIENTS * ROUNDS
    left: dict[tuple[str, str], str] = dict(kept)
    for (repo, tag), digest in kept.items():
        reply = await client.manifest(repo, tag)
        assert reply.status == 200, (repo, tag, reply.status)
        assert reply.headers["Docker-Content-Digest"] == digest
    # In scope: the newest three stay, each where its last push put it.
    tags = (await client.request("GET", f"/v2/{CHURN}/tags/list")).json()["tags"]
    assert len(tags) == 3, tags
    for tag in tags:
        left[(CHURN, tag)] = churned[tag].digest
    # Every manifest left has every blob, after the collection.
    for (repo, tag), digest in sorted(left.items()):
        reply = await client.manifest(repo, tag)
        assert reply.status == 200 and reply.headers["Docker-Content-Digest"] == digest
        for blob in by_digest[digest].blobs:
            got = await client.request("GET", f"/v2/{repo}/blobs/{blob.digest}")
            assert got.status == 200 and got.body == blob.data, (repo, tag, blob.digest)
