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
