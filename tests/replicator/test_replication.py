"""Event-driven replication between real processes: nats-server, Nimbus sites, Distribution."""

from __future__ import annotations

from proto.nimbus.v1 import replication_pb2
from tests.fixtures.distribution import DistributionFactory
from tests.fixtures.images import LayoutFactory, make_artifact, make_image, make_multiplatform
from tests.fixtures.nats import NatsFactory
from tests.fixtures.registry import RegistryFactory
from tests.replicator.conftest import (
    ClientFactory,
    ReplicatorFactory,
    StubFactory,
    assert_complete,
    eventually,
    peer,
    push_by_digest,
    push_image,
    skopeo_copy,
)


async def test_pushed_graph_reaches_nimbus_and_distribution(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    distribution_factory: DistributionFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_layout_factory: LayoutFactory,
    oci_client: ClientFactory,
) -> None:
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    b = registry_factory(["--nats", nats_url, "--site", "b"])
    dist = distribution_factory()
    rep = replicator_factory(nats_url, a.url, "a")
    api = replication_api(rep.address)
    await api.CreatePeer(peer("b", b.url, site="b"))
    await api.CreatePeer(peer("dist", dist.url))

    image = make_image((3000, 200_000, 5000), seed=41)
    index = make_multiplatform((2000, 4000), seed=42)
    layout = oci_layout_factory({"v1": image, "multi": index})
    skopeo_copy(layout, "v1", a.host, "team/app")
    skopeo_copy(layout, "multi", a.host, "team/multi")
    signature = make_artifact(image.manifest, "application/vnd.example.sig", b"signed")
    await push_by_digest(oci_client(a.url), "team/app", signature)

    for url in (b.url, dist.url):
        target = oci_client(url)

        async def arrived(target=target) -> None:
            await assert_complete(target, "team/app", "v1", image)
            await assert_complete(target, "team/multi", "multi", index)
            referrers = await target.referrers("team/app", image.digest)
            assert [r["digest"] for r in referrers] == [signature.digest]

        await eventually(arrived)

    status = await api.GetStatus(replication_pb2.GetStatusRequest())
    by_peer = {s.peer: s for s in status.peers}
    assert set(by_peer) == {"b", "dist"}
    for s in by_peer.values():
        assert s.images_copied >= 3 and s.bytes_copied > 200_000
        assert s.failures == 0


async def test_rules_filter_and_deletes_travel_only_when_asked(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    distribution_factory: DistributionFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_client: ClientFactory,
) -> None:
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    filtered = registry_factory()
    mirror = registry_factory()
    rep = replicator_factory(nats_url, a.url, "a")
    api = replication_api(rep.address)
    await api.CreatePeer(
        peer(
            "filtered", filtered.url, include=["team/*"], exclude=["team/secret*"], tag_pattern="v*"
        )
    )
    await api.CreatePeer(peer("mirror", mirror.url, actions=["push", "delete"]))
    dist = distribution_factory()
    await api.CreatePeer(
        peer("dist", dist.url, include=["other/*", "team/app"], actions=["push", "delete"])
    )

    source = oci_client(a.url)
    pushed = {
        ("team/app", "v1"): make_image((700,), seed=51),
        ("team/app", "dev-1"): make_image((700,), seed=52),
        ("team/secret-x", "v1"): make_image((700,), seed=53),
        ("other/app", "v1"): make_image((700,), seed=54),
        ("team/last", "v9"): make_image((700,), seed=55),
    }
    for (repository, tag), image in pushed.items():
        await push_image(source, repository, tag, image)

    to_mirror, to_filtered = oci_client(mirror.url), oci_client(filtered.url)

    async def mirrored() -> None:
        for (repository, tag), image in pushed.items():
            await assert_complete(to_mirror, repository, tag, image)
        await assert_complete(to_filtered, "team/last", "v9", pushed[("team/last", "v9")])
        await assert_complete(to_filtered, "team/app", "v1", pushed[("team/app", "v1")])

    await eventually(mirrored)
    assert await to_filtered.head_manifest("team/app", "dev-1") is None  # tag pattern
    assert await to_filtered.head_manifest("team/secret-x", "v1") is None  # exclude
    assert await to_filtered.head_manifest("other/app", "v1") is None  # include
    assert (
        await to_filtered.blob_size("other/app", pushed[("other/app", "v1")].config.digest) is None
    )

    # A tag delete and a manifest delete at A: the mirror follows, the push-only peer does not.
    assert await source.delete_manifest("team/app", "v1")
    assert await source.delete_manifest("other/app", pushed[("other/app", "v1")].digest)

    async def deleted() -> None:
        assert await to_mirror.head_manifest("team/app", "v1") is None
        assert (
            await to_mirror.head_manifest("other/app", pushed[("other/app", "v1")].digest) is None
        )
        # The tag went, the manifest it pointed to stays (as at A).
        assert await to_mirror.head_manifest("team/app", pushed[("team/app", "v1")].digest)
        await idle(api)

    await eventually(deleted)
    await assert_complete(to_filtered, "team/app", "v1", pushed[("team/app", "v1")])
    # Distribution deletes manifests (by digest) but refuses to delete a tag alone: that one
    # becomes a failure record saying so, and nothing more is deleted in its place.
    to_dist = oci_client(dist.url)
    assert await to_dist.head_manifest("other/app", pushed[("other/app", "v1")].digest) is None
    await assert_complete(to_dist, "team/app", "v1", pushed[("team/app", "v1")])
    failures = (await api.ListFailures(replication_pb2.ListFailuresRequest(peer="dist"))).failures
    assert [(f.repository, f.reference, f.action) for f in failures] == [
        ("team/app", "v1", "delete")
    ]
    assert "refused to delete tag v1" in failures[0].reason
    status = await api.GetStatus(replication_pb2.GetStatusRequest(peer="mirror"))
    assert status.peers[0].deletes_replicated == 2


async def idle(api) -> None:
    """Every peer's consumer has nothing waiting and nothing in flight."""
    status = await api.GetStatus(replication_pb2.GetStatusRequest())
    for s in status.peers:
        assert (s.peer, s.backlog, s.in_flight) == (s.peer, 0, 0)


async def test_active_active_pair_never_loops(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_client: ClientFactory,
    event_logs,
) -> None:
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    b = registry_factory(["--nats", nats_url, "--site", "b"])
    events_a, events_b = await event_logs(nats_url, "a"), await event_logs(nats_url, "b")
    api_a = replication_api(replicator_factory(nats_url, a.url, "a").address)
    api_b = replication_api(replicator_factory(nats_url, b.url, "b").address)
    await api_a.CreatePeer(peer("b", b.url, site="b"))
    await api_b.CreatePeer(peer("a", a.url, site="a"))

    from_a, from_b = make_image((900, 800), seed=61), make_image((900, 800), seed=62)
    await push_image(oci_client(a.url), "pair/from-a", "v1", from_a)
    await push_image(oci_client(b.url), "pair/from-b", "v1", from_b)

    async def everywhere() -> None:
        for url in (a.url, b.url):
            await assert_complete(oci_client(url), "pair/from-a", "v1", from_a)
            await assert_complete(oci_client(url), "pair/from-b", "v1", from_b)
        await idle(api_a)
        await idle(api_b)

    await eventually(everywhere)
    for repository, origin in (("pair/from-a", "a"), ("pair/from-b", "b")):
        for log in (events_a, events_b):
            pushes = log.manifest_pushes(repository, "v1")
            assert len(pushes) == 1, [(e.source.site, e.source.origin_site) for e in pushes]
            assert pushes[0].source.origin_site == origin
