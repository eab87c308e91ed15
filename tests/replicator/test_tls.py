"""Replication to peers that serve HTTPS with a private CA (the peer's `ca_pem`): a Nimbus peer
and a CNCF Distribution peer (its `http.tls`) receive complete images with verification on; a
peer given the wrong CA gets a failure record that names the certificate problem."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

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
from tests.replicator.test_ctl_peers import ctl
from tests.tls.conftest import client_context, make_certs


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


async def test_a_peer_asking_for_client_certificates_gets_the_peers_own(
    tmp_path: Path,
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_client: ClientFactory,
) -> None:
    certs = make_certs(tmp_path / "tls")
    ca_pem = certs.ca.read_text()
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    mtls = registry_factory(certs.server_args("--tls-client-ca", str(certs.ca)))
    api = replication_api(replicator_factory(nats_url, a.url, "a").address)
    cert, key = certs.client("replicator-a")
    with_cert = peer("with-cert", mtls.url)
    with_cert.peer.ca_pem = ca_pem
    with_cert.peer.client_cert_pem = cert.read_text()
    with_cert.peer.client_key_pem = key.read_text()
    created = await api.CreatePeer(with_cert)
    assert created.client_cert_pem == cert.read_text() and not created.client_key_pem
    without = peer("without", mtls.url)
    without.peer.ca_pem = ca_pem
    await api.CreatePeer(without)
    for answer in [
        *(await api.ListPeers(replication_pb2.ListPeersRequest())).peers,
        await api.GetPeer(replication_pb2.GetPeerRequest(name="with-cert")),
    ]:
        assert not answer.client_key_pem and b"PRIVATE KEY" not in answer.SerializeToString()

    image = make_image((3000, 150_000), seed=137)
    await push_image(oci_client(a.url), "secure/mtls", "v1", image)
    reader = oci_client(mtls.url, ssl=client_context(certs.ca, (cert, key)))
    await eventually(lambda: assert_complete(reader, "secure/mtls", "v1", image))

    async def recorded() -> replication_pb2.Failure:
        found = await api.ListFailures(replication_pb2.ListFailuresRequest(peer="without"))
        assert len(found.failures) == 1
        return found.failures[0]

    failure = await eventually(recorded)
    assert "client certificate" in failure.reason and "handshake" in failure.reason, failure
    assert failure.kind == "peer-refused"

    # Given the certificate (and its key), the failed change goes through on a retry.
    fixed = replication_pb2.Peer(
        name="without", client_cert_pem=cert.read_text(), client_key_pem=key.read_text()
    )
    await api.UpdatePeer(
        replication_pb2.UpdatePeerRequest(
            peer=fixed, update_mask=FieldMask(paths=["client_cert_pem", "client_key_pem"])
        )
    )
    outcome = await api.RetryFailure(
        replication_pb2.RetryFailureRequest(peer="without", id=failure.id)
    )
    assert outcome.retried == 1 and outcome.succeeded == 1, outcome


async def test_a_peer_key_that_is_not_the_certificates_is_refused(
    tmp_path: Path,
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
) -> None:
    certs = make_certs(tmp_path / "tls")
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    api = replication_api(replicator_factory(nats_url, a.url, "a").address)
    cert, _ = certs.client("mine")
    _, other_key = certs.client("other")
    request = peer("bad-pair", "https://127.0.0.1:9")
    request.peer.client_cert_pem = cert.read_text()
    request.peer.client_key_pem = other_key.read_text()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.CreatePeer(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "client_key_pem: does not match" in (refused.value.details() or "")


async def test_ctl_peers_sets_a_client_certificate_and_shows_it_and_tls_insecure(
    tmp_path: Path,
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicator_factory: ReplicatorFactory,
) -> None:
    certs = make_certs(tmp_path / "tls")
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    address = replicator_factory(nats_url, a.url, "a").address
    cert, key = certs.client("replicator-ctl")
    added = ctl(
        address,
        "peers",
        "add",
        "b",
        "https://127.0.0.1:9",
        "--client-cert",
        str(cert),
        "--client-key",
        str(key),
    )
    assert added.returncode == 0, added.stderr
    shown = ctl(address, "peers", "get", "b")
    assert "CN=replicator-ctl" in shown.stdout and "PRIVATE KEY" not in shown.stdout, shown.stdout
    assert "no (tls_insecure)" not in shown.stdout

    insecure = ctl(address, "peers", "update", "b", "--insecure", "--client-cert", "")
    assert insecure.returncode == 0, insecure.stderr
    shown = ctl(address, "peers", "get", "b")
    assert "no (tls_insecure)" in shown.stdout and "CN=replicator-ctl" not in shown.stdout
