"""Replication to peers that serve HTTPS with a private CA (the peer's `ca_pem`): a Nimbus peer
and a CNCF Distribution peer (its `http.tls`) receive complete images with verification on; a
peer given the wrong CA gets a failure record that names the certificate problem."""

from __future__ import annotations

import ssl
from pathlib import Path

from proto.nimbus.v1 import replication_pb2
from tests.fixtures.distribution import DistributionFactory
from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.registry import RegistryFactory
from tests.replicator.conftest import (
    ClientFactory,
    ReplicatorFactory,
    StubFactory,
    assert_complete,
    eventually,
    peer,
    push_image,
)
from tests.tls.conftest import make_certs


async def test_images_reach_https_peers_verified_by_a_private_ca(
    tmp_path: Path,
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    distribution_factory: DistributionFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_client: ClientFactory,
) -> None:
    certs = make_certs(tmp_path / "tls")
    ca_pem = certs.ca.read_text()
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    nimbus_peer = registry_factory(certs.server_args())
    dist = distribution_factory(tls=(certs.cert, certs.key))
    api = replication_api(replicator_factory(nats_url, a.url, "a").address)
    for name, target in (("nimbus", nimbus_peer.url), ("dist", dist.url)):
        request = peer(name, target)
        request.peer.ca_pem = ca_pem
        await api.CreatePeer(request)
    # Another CA: the peer's certificate does not verify, whatever else is right.
    wrong = peer("wrong-ca", nimbus_peer.url)
    wrong.peer.ca_pem = make_certs(tmp_path / "other").ca.read_text()
    await api.CreatePeer(wrong)

    image = make_image((3000, 150_000), seed=131)
    await push_image(oci_client(a.url), "secure/app", "v1", image)
    verify = ssl.create_default_context(cadata=ca_pem)
    for target in (nimbus_peer.url, dist.url):
        reader = oci_client(target, ssl=verify)
        await eventually(lambda reader=reader: assert_complete(reader, "secure/app", "v1", image))

    async def recorded() -> replication_pb2.Failure:
        found = await api.ListFailures(replication_pb2.ListFailuresRequest(peer="wrong-ca"))
        assert len(found.failures) == 1
        return found.failures[0]

    failure = await eventually(recorded)
    assert "certificate" in failure.reason.lower(), failure.reason
    status = await api.GetStatus(replication_pb2.GetStatusRequest())
    by_peer = {s.peer: s for s in status.peers}
    assert by_peer["nimbus"].failures == 0 and by_peer["dist"].failures == 0
