"""One push, one trace: the client's traceparent reaches the event, the webhook delivery (as a
header, each hop a new span of the same trace) and the peer site's own event through the
replicator's copy."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc

from nimbus import tracing
from nimbus.oci.client import RegistryClient
from proto.nimbus.v1 import events_pb2, replication_pb2, replication_pb2_grpc, webhooks_pb2_grpc
from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.notifier import NotifierFactory
from tests.fixtures.registry import RegistryFactory
from tests.metrics.conftest import ReplicatorFactory, add_webhook, push, until
from tests.notifier.receiver import Receiver
from tests.replicator.conftest import EventLog

CLIENT = tracing.TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


def _manifest_event(log: EventLog, repository: str, tag: str) -> events_pb2.Event:
    found = log.manifest_pushes(repository, tag)
    assert len(found) == 1, found
    return found[0]


async def test_one_push_is_one_trace_across_the_services(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    notifier_factory: NotifierFactory,
    replicators: ReplicatorFactory,
    webhooks_api: Callable[[str], webhooks_pb2_grpc.WebhooksStub],
) -> None:
    nats = nats_factory()
    a = registry_factory(["--nats", nats.url, "--site", "a"])
    b = registry_factory(["--nats", nats.url, "--site", "b"])
    notifier = notifier_factory(nats.url)
    replicator = replicators(nats.url, a.url, "a")
    events_a = await EventLog().start(nats.url, "a")
    events_b = await EventLog().start(nats.url, "b")
    receiver = await Receiver().start()
    try:
        await add_webhook(webhooks_api(notifier.address), receiver.url, ["v1", "untraced"])
        async with grpc.aio.insecure_channel(replicator.address) as channel:
            peer = replication_pb2.Peer(name="b", url=b.url, site="b")
            await replication_pb2_grpc.ReplicationStub(channel).CreatePeer(
                replication_pb2.CreatePeerRequest(peer=peer)
            )
        image = make_image((800,), seed=41)
        async with RegistryClient(a.url, headers={tracing.HEADER: str(CLIENT)}) as client:
            await push(client, "svc/api", "v1", image)
        (delivery,) = await receiver.wait_delivered(1)

        async def replicated() -> events_pb2.Event:
            return _manifest_event(events_b, "svc/api", "v1")

        at_b = await until(replicated)
        at_a = _manifest_event(events_a, "svc/api", "v1")

        pushed = tracing.parse(at_a.traceparent)
        sent = tracing.parse(delivery.headers.get("traceparent"))
        copied = tracing.parse(at_b.traceparent)
        assert pushed is not None and sent is not None and copied is not None
        # One trace id from the client's request to the peer site.
        assert pushed.trace_id == sent.trace_id == copied.trace_id == CLIENT.trace_id
        # Every hop its own span: the registry's request, the delivery, the copy (seen as the
        # peer registry's request span, a child of the copy's).
        spans = {CLIENT.span_id, pushed.span_id, sent.span_id, copied.span_id}
        assert len(spans) == 4
        # The webhook body stays Distribution's JSON: the trace is a header only.
        body = json.loads(delivery.body)
        assert "traceparent" not in json.dumps(body)
        # A push without a traceparent starts a trace of its own (its copy at b continues it,
        # so either delivery of it carries that trace).
        async with RegistryClient(a.url) as client:
            await push(client, "svc/api", "untraced", make_image((600,), seed=42))

        async def untraced_delivered() -> str | None:
            for received in receiver.delivered:
                target = received.json()["events"][0]["target"]
                if target.get("tag") == "untraced":
                    return received.headers.get("traceparent")
            raise AssertionError("no delivery of the untraced push yet")

        header = tracing.parse(await until(untraced_delivered))
        untraced = tracing.parse(_manifest_event(events_a, "svc/api", "untraced").traceparent)
        assert untraced is not None and untraced.trace_id != CLIENT.trace_id
        assert header is not None and header.trace_id == untraced.trace_id
    finally:
        await receiver.stop()
        await events_a.close()
        await events_b.close()


def test_traceparent_parsing() -> None:
    assert tracing.parse(str(CLIENT)) == CLIENT
    for bad in (
        "",
        "00-abc-def-01",
        f"ff-{CLIENT.trace_id}-{CLIENT.span_id}-01",
        f"00-{'0' * 32}-{CLIENT.span_id}-01",
        f"00-{CLIENT.trace_id}-{'0' * 16}-01",
    ):
        assert tracing.parse(bad) is None, bad
        assert tracing.continued(bad) == ""
    kid = tracing.parse(tracing.child(str(CLIENT)))
    assert kid is not None and kid.trace_id == CLIENT.trace_id and kid.span_id != CLIENT.span_id
    fresh = tracing.parse(tracing.child(None))
    assert fresh is not None and fresh.trace_id != CLIENT.trace_id
