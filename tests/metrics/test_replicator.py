"""The replicator's metrics move as a push is copied to a live peer, retried towards a dead one,
refused by another, and as a peer is reconciled."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web

from nimbus.oci.client import RegistryClient
from proto.nimbus.v1 import replication_pb2, replication_pb2_grpc
from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.registry import RegistryFactory, free_port
from tests.metrics.conftest import ReplicatorFactory, Scrape, metrics_listen, push, scrape, until


@pytest.fixture
async def refusing_peer() -> AsyncIterator[str]:
    """An HTTP server answering every request 403 with an OCI error: a registry that refuses."""

    async def deny(request: web.Request) -> web.Response:
        body = {"errors": [{"code": "DENIED", "message": "read-only site"}]}
        return web.json_response(body, status=403)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", deny)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _peer(name: str, url: str, reconcile: float = 0.0) -> replication_pb2.CreatePeerRequest:
    return replication_pb2.CreatePeerRequest(
        peer=replication_pb2.Peer(name=name, url=url, reconcile_interval_seconds=reconcile)
    )


async def test_copies_lag_retries_failures_and_backlog(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicators: ReplicatorFactory,
    refusing_peer: str,
) -> None:
    nats = nats_factory()
    a = registry_factory(["--nats", nats.url, "--site", "a"])
    b = registry_factory()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    listen, url = metrics_listen()
    replicator = replicators(nats.url, a.url, "a", ["--metrics-listen", listen])
    async with grpc.aio.insecure_channel(replicator.address) as channel:
        stub = replication_pb2_grpc.ReplicationStub(channel)
        await stub.CreatePeer(_peer("b", b.url, reconcile=1.0))
        await stub.CreatePeer(_peer("dead", dead))
        await stub.CreatePeer(_peer("refusing", refusing_peer))

        async def workers_up() -> Scrape:
            now = await scrape(url)
            for name in ("b", "dead", "refusing"):
                assert now.has("nimbus_replicator_backlog")
                assert ("nimbus_replicator_backlog", frozenset({("peer", name)})) in now.samples
            return now

        before = await until(workers_up)
        assert before.total("nimbus_replicator_copies_total") == 0

        image = make_image((3000, 5000), seed=21)
        async with RegistryClient(a.url) as client:
            await push(client, "team/api", "v1", image)

        async def copied() -> Scrape:
            now = await scrape(url)
            assert now.value("nimbus_replicator_copies_total", peer="b", outcome="copied") == 1
            assert (
                now.value("nimbus_replicator_failures_total", peer="refusing", kind="peer-refused")
                == 1
            )
            assert now.value("nimbus_replicator_retries_total", peer="dead") >= 2
            assert now.value("nimbus_replicator_in_flight", peer="dead") == 1
            return now

        after = await until(copied)
        # Every blob of the image went to b once, its bytes exactly.
        assert after.value("nimbus_replicator_bytes_copied_total", peer="b") == sum(
            blob.size for blob in image.blobs
        )
        assert after.value("nimbus_replicator_lag_seconds_count", peer="b") == 1
        assert after.value("nimbus_replicator_lag_seconds_sum", peer="b") > 0
        assert after.value("nimbus_replicator_backlog", peer="b") == 0
        assert after.value("nimbus_replicator_in_flight", peer="b") == 0
        # The refusing peer: one change failed for good, nothing retried, nothing held.
        assert after.value("nimbus_replicator_copies_total", peer="refusing", outcome="failed") == 1
        assert after.value("nimbus_replicator_retries_total", peer="refusing") == 0
        assert after.value("nimbus_replicator_in_flight", peer="refusing") == 0
        # The dead peer: retried without end, so no failure record and nothing copied.
        assert after.total("nimbus_replicator_failures_total", peer="dead") == 0
        assert after.total("nimbus_replicator_copies_total", peer="dead") == 0

        # The reconcile of b (every second) finds the image there: present, nothing copied.
        async def reconciled() -> Scrape:
            now = await scrape(url)
            key = {"peer": "b", "outcome": "completed"}
            assert now.value("nimbus_replicator_reconcile_runs_total", **key) >= 1
            return now

        later = await until(reconciled)
        assert later.value("nimbus_replicator_copies_total", peer="b", outcome="present") >= 1
        assert later.value("nimbus_replicator_copies_total", peer="b", outcome="copied") == 1
        assert later.value("nimbus_replicator_lag_seconds_count", peer="b") == 1

        # A deleted peer's series go with it.
        await stub.DeletePeer(replication_pb2.DeletePeerRequest(name="refusing"))
        gone = await scrape(url)
        assert gone.total("nimbus_replicator_failures_total", peer="refusing") == 0
        assert gone.total("nimbus_replicator_copies_total", peer="refusing") == 0
