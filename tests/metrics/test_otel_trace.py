"""With OTLP configured, one push is one trace in the collector across the real services: the
registry's push and publish, the notifier's delivery attempt and the replicator's copy (and the
peer registry's push of the copy), each with the right parent, and the `traceparent` each hop
sends is its own span's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import pytest

from nimbus import tracing
from nimbus.oci.client import RegistryClient
from proto.nimbus.v1 import replication_pb2, replication_pb2_grpc, webhooks_pb2_grpc
from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.notifier import NotifierFactory
from tests.fixtures.registry import RegistryFactory
from tests.metrics.conftest import ReplicatorFactory, add_webhook, push
from tests.notifier.receiver import Receiver
from tests.tracing.collector import Collector, Received

CLIENT = tracing.TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
EXPECTED = {
    ("nimbus-registry", "registry.push"),
    ("nimbus-registry", "registry.publish"),
    ("nimbus-notifier", "notifier.delivery"),
    ("nimbus-replicator", "replicator.copy"),
}


async def _trace(collector: Collector, within: float = 30.0) -> list[Received]:
    """The spans of the client's trace, once the four services' expected ones have come."""
    deadline = time.monotonic() + within
    while True:
        spans = [r for r in collector.spans() if r.span.trace_id.hex() == CLIENT.trace_id]
        names = {(r.service, r.span.name) for r in spans}
        # The peer's own push of the copy is a second registry.push.
        pushes = sum(r.span.name == "registry.push" for r in spans)
        if EXPECTED <= names and pushes >= 2:
            return spans
        assert time.monotonic() < deadline, f"spans of the trace so far: {sorted(names)}"
        await asyncio.sleep(0.2)


async def test_one_push_is_one_otel_trace_across_the_services(
    monkeypatch: pytest.MonkeyPatch,
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    notifier_factory: NotifierFactory,
    replicators: ReplicatorFactory,
    webhooks_api: Callable[[str], webhooks_pb2_grpc.WebhooksStub],
) -> None:
    collector = await Collector().start()
    receiver = await Receiver().start()
    # Every service started below exports to the collector, quickly.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    try:
        nats = nats_factory()
        a = registry_factory(["--nats", nats.url, "--site", "a"])
        b = registry_factory(["--nats", nats.url, "--site", "b"])
        notifier = notifier_factory(nats.url)
        replicator = replicators(nats.url, a.url, "a")
        await add_webhook(webhooks_api(notifier.address), receiver.url, ["v1"])
        async with grpc.aio.insecure_channel(replicator.address) as channel:
            peer = replication_pb2.Peer(name="b", url=b.url, site="b")
            await replication_pb2_grpc.ReplicationStub(channel).CreatePeer(
                replication_pb2.CreatePeerRequest(peer=peer)
            )
        async with RegistryClient(a.url, headers={tracing.HEADER: str(CLIENT)}) as client:
            await push(client, "svc/api", "v1", make_image((800,), seed=43))
        (delivery,) = await receiver.wait_delivered(1)
        spans = await _trace(collector)
    finally:
        await receiver.stop()
        await collector.stop()

    by_id = {r.span.span_id: r for r in spans}
    pushes = [r for r in spans if r.span.name == "registry.push"]
    (origin,) = [r for r in pushes if r.span.parent_span_id.hex() == CLIENT.span_id]
    children = [r for r in spans if r.span.parent_span_id == origin.span.span_id]
    # The publish of the push's event, the delivery and the copy are children of the push.
    assert sorted(r.span.name for r in children) == [
        "notifier.delivery",
        "registry.publish",
        "replicator.copy",
    ]
    (attempt,) = [r for r in children if r.span.name == "notifier.delivery"]
    (copy,) = [r for r in children if r.span.name == "replicator.copy"]
    # The peer's push of the copy is the copy's child: site b's part of the same trace.
    (at_peer,) = [r for r in pushes if r is not origin]
    assert by_id[at_peer.span.parent_span_id] is copy
    # The webhook got the delivery span's own context, and its status is on the span.
    sent = tracing.parse(delivery.headers.get(tracing.HEADER))
    assert sent is not None and sent.span_id == attempt.span.span_id.hex()
    status = {a.key: a.value.int_value for a in attempt.span.attributes}
    assert status["http.response.status_code"] == 200
    attributes = {a.key: a.value.string_value for a in copy.span.attributes}
    assert attributes["nimbus.peer"] == "b" and attributes["nimbus.repository"] == "svc/api"
