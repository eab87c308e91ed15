"""Retention at a replicated site: a peer whose rule replicates deletes ends with exactly the
tags the site keeps, and the manifests retention deleted are gone there too. Real processes:
nats-server, two registries, the replicator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from nimbus.oci.client import RegistryClient
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import replication_pb2, replication_pb2_grpc
from tests.fixtures.images import Image, make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.registry import RegistryFactory
from tests.lifecycle.conftest import LifecycleRegistry, admin
from tests.replicator.conftest import (
    ReplicatorProcess,
    StubFactory,
    assert_complete,
    eventually,
    peer,
    push_image,
    replication_api,
)

REPO = "rep/app"
KEPT = [f"keep-{i}" for i in range(4)]
DROPPED = [f"drop-{i}" for i in range(8)]

__all__ = ["replication_api"]  # a fixture of the replicator tests, used here


@pytest.fixture
def replicators() -> Iterator[list[ReplicatorProcess]]:
    """Replicators this test starts (appended, then started); stopped at the end."""
    started: list[ReplicatorProcess] = []
    yield started
    for proc in started:
        proc.stop()


async def _idle(api: replication_pb2_grpc.ReplicationStub) -> None:
    """Peer b's consumer has nothing waiting and nothing in flight."""
    status = await api.GetStatus(replication_pb2.GetStatusRequest())
    assert [(s.peer, s.backlog, s.in_flight) for s in status.peers] == [("b", 0, 0)]


async def test_a_peer_with_deletes_ends_with_the_same_tags(
    nats_factory: NatsFactory,
    lifecycle_registry: LifecycleRegistry,
    registry_factory: RegistryFactory,
    replicators: list[ReplicatorProcess],
    replication_api: StubFactory,
    tmp_path: Path,
) -> None:
    nats_url = nats_factory().url
    a = lifecycle_registry(extra_args=["--nats", nats_url, "--site", "a"])
    b = registry_factory()
    rep = ReplicatorProcess(tmp_path, nats_url, a.url, "a", [])
    replicators.append(rep)
    rep.start()
    api = replication_api(rep.address)
    await api.CreatePeer(peer("b", b.url, actions=["push", "delete"]))

    # Each tag its own manifest, so every deleted tag leaves a manifest for retention to go.
    images: dict[str, Image] = {
        tag: make_image((600,), seed=3000 + i) for i, tag in enumerate(KEPT + DROPPED)
    }
    async with RegistryClient(a.url) as source, RegistryClient(b.url) as target:
        for tag, image in images.items():
            await push_image(source, REPO, tag, image)

        async def all_at_b() -> None:
            assert set(await target.list_tags(REPO)) == set(images)
            for tag, image in images.items():
                await assert_complete(target, REPO, tag, image)

        await eventually(all_at_b)

        rule = pb.RetentionRule(
            name="keep",
            repositories="rep/*",
            keep_tags=["keep-*"],
            untagged_older_than=Duration(seconds=0),
        )
        async with admin(a) as stub:
            await stub.SetLifecyclePolicies(
                pb.SetLifecyclePoliciesRequest(policies=pb.LifecyclePolicies(retention=[rule]))
            )
            progress = [p async for p in stub.RunRetention(pb.RunRetentionRequest())]
        items = [p.item for p in progress if p.HasField("item")]
        assert progress[-1].phase == pb.RetentionProgress.DONE
        assert {i.tag for i in items if i.kind == pb.RetentionItem.TAG} == set(DROPPED)
        deleted = {i.digest for i in items if i.kind == pb.RetentionItem.MANIFEST}
        assert deleted == {images[tag].digest for tag in DROPPED}
        assert set(await source.list_tags(REPO)) == set(KEPT)

        async def same_at_b() -> None:
            assert sorted(await target.list_tags(REPO)) == sorted(await source.list_tags(REPO))
            for digest in deleted:
                assert await target.head_manifest(REPO, digest) is None, digest
            await _idle(api)

        await eventually(same_at_b)
        # The kept images are whole at b, and no delete failed on the way.
        for tag in KEPT:
            await assert_complete(target, REPO, tag, images[tag])
        failures = await api.ListFailures(replication_pb2.ListFailuresRequest(peer="b"))
        assert list(failures.failures) == []
