"""NATS as a three-node JetStream cluster: the stream and KV buckets keep three copies, and the
registry and the notifier, given every node's URL, carry on when the node they use dies."""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import nats
import pytest

from nimbus import streams
from nimbus.cli import build_parser
from nimbus.config import ConfigError, load
from nimbus.oci.client import RegistryClient
from notifier.config import NotifierConfig
from proto.nimbus.v1 import replication_pb2_grpc, webhooks_pb2, webhooks_pb2_grpc
from registry.config import RegistryConfig
from replicator.config import ReplicatorConfig
from tests.fixtures.images import Blob, make_blob
from tests.fixtures.nats import NatsCluster
from tests.fixtures.notifier import NotifierFactory
from tests.fixtures.registry import RegistryFactory, RegistryProcess
from tests.notifier.receiver import Receiver
from tests.replicator.conftest import ReplicatorProcess, peer
from tests.scaleout.stream import image_manifests, site_events

T = TypeVar("T")

PUSHES = 24
KILL_AFTER = 8


OCI = Callable[[RegistryProcess], RegistryClient]


@pytest.fixture
async def oci() -> AsyncIterator[OCI]:
    """`oci(registry)`: the shared OCI client at that registry, closed after the test."""
    clients: list[RegistryClient] = []

    def at(registry: RegistryProcess) -> RegistryClient:
        clients.append(RegistryClient(registry.url))
        return clients[-1]

    yield at
    for client in clients:
        await client.close()


@pytest.fixture
def site() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def nats_args(cluster: NatsCluster) -> list[str]:
    return [arg for url in cluster.urls for arg in ("--nats", url)]


def start_registry(
    registry_factory: RegistryFactory, cluster: NatsCluster, site: str
) -> RegistryProcess:
    return registry_factory(
        extra_args=[
            *nats_args(cluster),
            "--site",
            site,
            "--stream-replicas",
            "3",
            "--no-blob-events",
        ]
    )


async def stream_replicas(cluster: NatsCluster, stream: str) -> tuple[int, int]:
    """The stream's configured replica count, and how many copies the cluster holds."""
    nc = await nats.connect([n.url for n in cluster.nodes if n.running], connect_timeout=2)
    try:
        info = await nc.jetstream(timeout=5).stream_info(stream)
        held = 1 + len(info.cluster.replicas or []) if info.cluster else 1
        return info.config.num_replicas, held
    finally:
        await nc.close()


async def node_in_use(cluster: NatsCluster, connection_name: str, within: float = 30.0) -> int:
    """The node a client is connected to, once it is connected."""
    deadline = time.monotonic() + within
    while (node := await asyncio.to_thread(cluster.node_of, connection_name)) is None:
        assert time.monotonic() < deadline, f"{connection_name} never connected"
        await asyncio.sleep(0.1)
    return node


async def retry_unavailable(call: Callable[[], Awaitable[T]], within: float = 30.0) -> T:
    """A gRPC call retried while it answers UNAVAILABLE, as gRPC clients retry it."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def push_blobs(client: RegistryClient, name: str, blobs: list[Blob]) -> None:
    for blob in blobs:
        assert await client.push_blob(name, blob.data) == blob.digest


async def put_manifest(
    client: RegistryClient, name: str, tag: str, manifest: Blob, request_id: str
) -> None:
    """A manifest push whose event carries ``request_id``; it raises unless acknowledged."""
    tagged = client.with_headers({"X-Request-Id": request_id})
    pushed = await tagged.put_manifest(name, tag, manifest.data, manifest.media_type)
    assert pushed.digest == manifest.digest


async def push_series(
    client: RegistryClient, name: str, manifests: list[Blob], on_push: Callable[[int], None]
) -> list[str]:
    """Pushes each manifest under its own tag, one after another; the request ids acknowledged."""
    acknowledged = []
    for i, manifest in enumerate(manifests):
        request_id = f"push-{i}-{uuid.uuid4().hex[:8]}"
        await put_manifest(client, name, f"v{i}", manifest, request_id)
        acknowledged.append(request_id)
        on_push(i)
    return acknowledged


async def test_events_survive_the_loss_of_the_node_the_registry_is_on(
    nats_cluster: NatsCluster,
    registry_factory: RegistryFactory,
    oci: OCI,
    site: str,
) -> None:
    registry = start_registry(registry_factory, nats_cluster, site)
    client = oci(registry)
    config, layer = Blob("application/vnd.oci.image.config.v1+json", b"{}"), make_blob(2048, seed=1)
    await push_blobs(client, "cluster/app", [config, layer])
    node = await node_in_use(nats_cluster, f"nimbus-registry-{site}")
    assert await stream_replicas(nats_cluster, streams.EVENTS_STREAM) == (3, 3)

    killed: list[int] = []

    def kill_midway(i: int) -> None:
        if i + 1 == KILL_AFTER:
            nats_cluster.nodes[node].kill()
            killed.append(node)

    acknowledged = await push_series(
        client, "cluster/app", image_manifests(config, layer, PUSHES), kill_midway
    )
    assert killed == [node]

    events = await site_events(
        [n.url for n in nats_cluster.nodes if n.running], site, expected=PUSHES
    )
    ids = Counter(e.msg_id for e in events)
    assert all(count == 1 for count in ids.values()), ids.most_common(3)
    assert all(e.msg_id == e.event.id for e in events)
    # One event per acknowledged push, in the order the pushes were acknowledged.
    assert [e.event.request.id for e in events] == acknowledged
    assert [e.event.target.tag for e in events] == [f"v{i}" for i in range(PUSHES)]
    # The registry moved to a surviving node; the stream still has a copy on each of those.
    assert await node_in_use(nats_cluster, f"nimbus-registry-{site}") != node


async def test_the_notifier_keeps_delivering_across_a_failover(
    nats_cluster: NatsCluster,
    registry_factory: RegistryFactory,
    notifier_factory: NotifierFactory,
    oci: OCI,
    site: str,
) -> None:
    registry = start_registry(registry_factory, nats_cluster, site)
    client = oci(registry)
    config, layer = Blob("application/vnd.oci.image.config.v1+json", b"{}"), make_blob(2048, seed=2)
    await push_blobs(client, "cluster/hooked", [config, layer])
    await node_in_use(nats_cluster, f"nimbus-registry-{site}")
    instance = f"notifier-{site}"
    notifier = notifier_factory(
        nats_cluster.urls[0],
        extra_args=[*nats_args(nats_cluster)[2:], "--kv-replicas", "3", "--instance", instance],
    )
    receiver = await Receiver().start()
    try:
        async with grpc.aio.insecure_channel(notifier.address) as channel:
            stub = webhooks_pb2_grpc.WebhooksStub(channel)
            await stub.CreateWebhook(
                webhooks_pb2.CreateWebhookRequest(
                    webhook=webhooks_pb2.Webhook(
                        url=receiver.url,
                        filter=webhooks_pb2.EventFilter(repositories=["cluster/hooked"]),
                    )
                )
            )
            for bucket in (streams.WEBHOOKS_BUCKET, streams.DELIVERIES_BUCKET):
                assert await stream_replicas(nats_cluster, f"KV_{bucket}") == (3, 3)

            manifests = image_manifests(config, layer, 6)
            before = await push_series(client, "cluster/hooked", manifests[:3], lambda i: None)
            await receiver.wait_delivered(3)

            node = await node_in_use(nats_cluster, f"nimbus-notifier {instance}")
            nats_cluster.nodes[node].kill()
            after = await push_series(client, "cluster/hooked", manifests[3:], lambda i: None)
            # At least once: every push reaches the receiver, through a surviving node.
            delivered: set[str] = set()
            deadline = time.monotonic() + 60
            while not set(before + after) <= delivered:
                assert time.monotonic() < deadline, f"delivered {sorted(delivered)}"
                await asyncio.sleep(0.2)
                delivered = {
                    e["request"]["id"] for r in receiver.delivered for e in r.json()["events"]
                }
            # The webhooks bucket still takes writes with a node gone (once JetStream has
            # elected a new leader where the dead node led: until then the API says UNAVAILABLE).
            created = await retry_unavailable(
                lambda: stub.CreateWebhook(
                    webhooks_pb2.CreateWebhookRequest(
                        webhook=webhooks_pb2.Webhook(url=receiver.url)
                    )
                )
            )
            listed = await retry_unavailable(
                lambda: stub.ListWebhooks(webhooks_pb2.ListWebhooksRequest())
            )
            assert created.id in [w.id for w in listed.webhooks]
            assert len(listed.webhooks) == 2
            assert await node_in_use(nats_cluster, f"nimbus-notifier {instance}") != node
    finally:
        await receiver.stop()


@pytest.mark.parametrize(
    ("command", "flag", "setting"),
    [
        ("registry", "--stream-replicas", lambda c: c.events.stream_replicas),
        ("notifier", "--kv-replicas", lambda c: c.kv_replicas),
        ("replicator", "--kv-replicas", lambda c: c.kv_replicas),
    ],
)
def test_every_service_takes_several_urls_and_a_replica_count(
    command: str, flag: str, setting: Callable[[Any], int]
) -> None:
    module = importlib.import_module(f"{command}.cli")
    config_class = {
        "registry": RegistryConfig,
        "notifier": NotifierConfig,
        "replicator": ReplicatorConfig,
    }[command]
    urls = ["nats://n1:4222", "nats://n2:4222", "tls://n3:4222"]
    argv = [command, *(arg for url in urls for arg in ("--nats", url)), flag, "3"]
    config = load(config_class, env={}, flags=module.flags(build_parser().parse_args(argv)))
    config.validate()
    assert setting(config) == 3
    nats_urls = config.events.nats if command == "registry" else config.nats
    assert nats_urls == urls

    env_key = "NIMBUS_EVENTS_STREAM_REPLICAS" if command == "registry" else "NIMBUS_KV_REPLICAS"
    from_env = load(config_class, env={env_key: "5"})
    from_env.validate()
    assert setting(from_env) == 5
    for wrong in ("0", "6"):
        with pytest.raises(ConfigError, match="between 1 and 5"):
            load(config_class, env={env_key: wrong}).validate()


async def test_the_replicator_keeps_copying_across_a_failover(
    nats_cluster: NatsCluster,
    registry_factory: RegistryFactory,
    oci: OCI,
    site: str,
    tmp_path: Path,
) -> None:
    source = start_registry(registry_factory, nats_cluster, site)
    peer_registry = registry_factory()
    client, at_peer = oci(source), oci(peer_registry)
    config, layer = Blob("application/vnd.oci.image.config.v1+json", b"{}"), make_blob(2048, seed=3)
    await push_blobs(client, "cluster/copied", [config, layer])
    await node_in_use(nats_cluster, f"nimbus-registry-{site}")
    replicator = ReplicatorProcess(
        tmp_path,
        nats_cluster.urls[0],
        source.url,
        site,
        [*nats_args(nats_cluster)[2:], "--kv-replicas", "3"],
    )

    async def copied(tags: list[str]) -> None:
        deadline = time.monotonic() + 60
        for tag in tags:
            while await at_peer.get_manifest("cluster/copied", tag) is None:
                assert time.monotonic() < deadline, f"{tag} never reached the peer"
                await asyncio.sleep(0.2)

    try:
        await asyncio.to_thread(replicator.start)
        async with grpc.aio.insecure_channel(replicator.address) as channel:
            api = replication_pb2_grpc.ReplicationStub(channel)
            await retry_unavailable(lambda: api.CreatePeer(peer("b", peer_registry.url)))
        peers_bucket = streams.site_bucket(streams.PEERS_BUCKET, site)
        assert await stream_replicas(nats_cluster, f"KV_{peers_bucket}") == (3, 3)

        manifests = image_manifests(config, layer, 6)
        await push_series(client, "cluster/copied", manifests[:3], lambda i: None)
        await copied(["v0", "v1", "v2"])

        node = await node_in_use(nats_cluster, f"nimbus-replicator-{site}")
        nats_cluster.nodes[node].kill()
        for i, manifest in enumerate(manifests[3:], start=3):
            await put_manifest(client, "cluster/copied", f"v{i}", manifest, f"late-{i}")
        await copied(["v3", "v4", "v5"])
        assert await node_in_use(nats_cluster, f"nimbus-replicator-{site}") != node
    finally:
        await asyncio.to_thread(replicator.stop)
