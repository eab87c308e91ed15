"""Nothing lost, nothing doubled: SIGKILL mid-burst, two replicas sharing the consumer, and a
replica that stalls or dies while a receiver is still answering it."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from nats.js import JetStreamContext

from nimbus.streams import EVENTS_STREAM, NOTIFIER_CONSUMER
from notifier.deliveries import delivery_id
from proto.nimbus.v1 import events_pb2, webhooks_pb2, webhooks_pb2_grpc
from tests.fixtures.nats import NatsServer
from tests.fixtures.notifier import NotifierFactory, NotifierProcess
from tests.notifier.conftest import (
    ReceiverFactory,
    add_webhook,
    make_event,
    publish,
    wait_settled,
)
from tests.notifier.receiver import Receiver

# JetStream hands a message to another replica after 2 s without an ack or progress ack; an
# attempt may wait a minute for its answer, so a held request is still in flight.
RACY = {"NIMBUS_CONSUMER_ACK_WAIT": "2", "NIMBUS_DELIVERY_TIMEOUT": "60"}


async def all_deliveries(
    stub: webhooks_pb2_grpc.WebhooksStub, webhook_id: str
) -> list[webhooks_pb2.Delivery]:
    found: list[webhooks_pb2.Delivery] = []
    request = webhooks_pb2.ListDeliveriesRequest(webhook_id=webhook_id, page_size=300)
    while True:
        page = await stub.ListDeliveries(request)
        found.extend(page.deliveries)
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


async def acks_pending(js: JetStreamContext) -> int:
    info = await js.consumer_info(EVENTS_STREAM, NOTIFIER_CONSUMER)
    return info.num_ack_pending or 0


async def wait_all_acked(js: JetStreamContext, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while (pending := await acks_pending(js)) > 0:
        assert time.monotonic() < deadline, f"{pending} events still unacknowledged"
        await asyncio.sleep(0.1)


async def pass_every_lane(
    js: JetStreamContext,
    stub: webhooks_pb2_grpc.WebhooksStub,
    webhook_id: str,
    repositories: list[str],
    instances: set[str],
    rounds: int = 30,
) -> set[str]:
    """Publish one marker event per repository, round after round, until every instance has
    delivered a marker of every repository; the markers' ids.

    A replica sends a repository's events in stream order, so its marker of a repository comes
    after every earlier event of that repository it holds."""
    markers: set[str] = set()
    passed: set[tuple[str, str]] = set()
    for number in range(rounds):
        batch = [make_event(repo, tag=f"marker-{number}") for repo in repositories]
        markers.update(e.id for e in batch)
        await wait_settled(js, await publish(js, batch))
        for event in batch:
            request = webhooks_pb2.GetDeliveryRequest(id=delivery_id(webhook_id, event.id))
            record = await stub.GetDelivery(request)
            passed.add((event.target.repository, record.attempts[-1].instance))
        if len(passed) == len(repositories) * len(instances):
            return markers
    raise AssertionError(f"after {rounds} rounds of markers, lanes passed: {sorted(passed)}")


async def wait_log(process: NotifierProcess, text: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while text not in process.log_text():
        assert time.monotonic() < deadline, f"{text!r} not logged within {within}s"
        await asyncio.sleep(0.1)


async def test_sigkill_in_a_burst_of_1000_events_loses_none(
    nats_env: tuple[NatsServer, JetStreamContext],
    notifier_factory: NotifierFactory,
    receiver_factory: ReceiverFactory,
) -> None:
    server, js = nats_env
    notifier = notifier_factory(server.url)
    receiver = await receiver_factory()
    async with grpc.aio.insecure_channel(notifier.address) as channel:
        webhook = await add_webhook(webhooks_pb2_grpc.WebhooksStub(channel), receiver.url)
    events = [make_event(f"team/app{i % 20}", tag=f"t{i}", seq=i) for i in range(1000)]
    await publish(js, events)

    await receiver.wait_delivered(150, within=60)
    notifier.kill()  # SIGKILL: no chance to hand anything back
    killed_at = len(receiver.delivered)
    assert killed_at < 1000, "the burst finished before the kill; nothing was tested"

    restarted = notifier_factory(server.url)
    await receiver.wait_delivered(1000, within=90)
    delivered = receiver.delivered
    ids = {r.json()["events"][0]["id"] for r in delivered}
    for _ in range(100):  # a few re-sent after the kill may still be on their way
        if ids == {e.id for e in events}:
            break
        await asyncio.sleep(0.1)
        ids = {r.json()["events"][0]["id"] for r in receiver.delivered}
    assert ids == {e.id for e in events}
    # At least once: an event re-sent after the kill carries the same webhook-id as before.
    by_delivery = Counter(r.webhook_id for r in receiver.delivered)
    assert len(by_delivery) == 1000

    async with grpc.aio.insecure_channel(restarted.address) as channel:
        records = await all_deliveries(webhooks_pb2_grpc.WebhooksStub(channel), webhook.id)
    assert len(records) == 1000
    assert {r.event_id for r in records} == ids
    assert all(r.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED for r in records)


async def test_two_replicas_share_the_work_and_never_both_deliver_an_event(
    nats_env: tuple[NatsServer, JetStreamContext],
    notifier_factory: NotifierFactory,
    receiver_factory: ReceiverFactory,
) -> None:
    server, js = nats_env
    patient = {"NIMBUS_CONSUMER_ACK_WAIT": "2"}
    first = notifier_factory(server.url, ["--instance", "first"], env=patient)
    receiver = await receiver_factory()
    async with grpc.aio.insecure_channel(first.address) as channel:
        webhook = await add_webhook(webhooks_pb2_grpc.WebhooksStub(channel), receiver.url)
    second = notifier_factory(server.url, ["--instance", "second"], env=patient)

    repositories = [f"team/app{i}" for i in range(10)]
    events = [make_event(repositories[i % 10], tag=f"t{i}", seq=i) for i in range(600)]
    await publish(js, events)
    await receiver.wait_delivered(600, within=60)
    await wait_all_acked(js)
    async with grpc.aio.insecure_channel(second.address) as channel:
        stub = webhooks_pb2_grpc.WebhooksStub(channel)
        # A copy of an event handed to both replicas may still wait in a lane of one of them;
        # once each replica delivered a later event of every repository, none can be left.
        markers = await pass_every_lane(js, stub, webhook.id, repositories, {"first", "second"})
        records = await all_deliveries(stub, webhook.id)

    counts = Counter(r.json()["events"][0]["id"] for r in receiver.requests)
    assert set(counts) == {e.id for e in events} | markers
    assert max(counts.values()) == 1, counts.most_common(3)
    assert len(records) == 600 + len(markers)
    by_instance = Counter(r.attempts[-1].instance for r in records)
    assert set(by_instance) == {"first", "second"}, by_instance


@dataclass
class MidSend:
    """`first` is sending `event`, and the receiver holds the request unanswered; `second` runs
    beside it."""

    first: NotifierProcess
    second: NotifierProcess
    receiver: Receiver
    stub: webhooks_pb2_grpc.WebhooksStub
    webhook: webhooks_pb2.Webhook
    event: events_pb2.Event

    @property
    def delivery(self) -> str:
        return delivery_id(self.webhook.id, self.event.id)

    async def record_when_final(self, within: float = 30.0) -> webhooks_pb2.Delivery:
        request = webhooks_pb2.GetDeliveryRequest(id=self.delivery)
        deadline = time.monotonic() + within
        while True:
            try:
                record: webhooks_pb2.Delivery = await self.stub.GetDelivery(request)
                if record.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED:
                    return record
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
            assert time.monotonic() < deadline, "the delivery did not succeed"
            await asyncio.sleep(0.1)


@pytest.fixture
async def mid_send(
    nats_env: tuple[NatsServer, JetStreamContext],
    notifier_factory: NotifierFactory,
    receiver_factory: ReceiverFactory,
) -> AsyncIterator[MidSend]:
    server, js = nats_env
    first = notifier_factory(server.url, ["--instance", "first"], env=RACY)
    receiver = await receiver_factory()
    async with grpc.aio.insecure_channel(first.address) as channel:
        webhook = await add_webhook(webhooks_pb2_grpc.WebhooksStub(channel), receiver.url)
    receiver.hold()
    event = make_event("team/app")
    await publish(js, [event])
    await receiver.wait_arrived(1)
    # Only now, so the event is certainly first's to send.
    second = notifier_factory(server.url, ["--instance", "second"], env=RACY)
    async with grpc.aio.insecure_channel(second.address) as channel:
        stub = webhooks_pb2_grpc.WebhooksStub(channel)
        yield MidSend(first, second, receiver, stub, webhook, event)
    receiver.release()


async def test_a_replica_stalled_mid_send_has_its_event_handed_out_but_not_sent_twice(
    js: JetStreamContext, mid_send: MidSend
) -> None:
    first, second, receiver = mid_send.first, mid_send.second, mid_send.receiver
    assert first.proc is not None
    # Stalled (as a replica starved of CPU is) for longer than the ack wait: no progress acks,
    # so JetStream hands the event to second while first's request is still unanswered.
    first.proc.send_signal(signal.SIGSTOP)
    try:
        await wait_log(second, "delivery claimed by another replica; waiting")
    finally:
        first.proc.send_signal(signal.SIGCONT)

    receiver.release()
    record = await mid_send.record_when_final()
    await wait_log(second, "delivery finished by another replica")
    await wait_all_acked(js)

    assert [r.webhook_id for r in receiver.arrived] == [mid_send.delivery]
    assert [a.instance for a in record.attempts] == ["first"]
    assert "taken over" not in second.log_text()


async def test_a_replica_killed_mid_send_has_its_delivery_finished_by_the_other(
    js: JetStreamContext, mid_send: MidSend
) -> None:
    first, second, receiver = mid_send.first, mid_send.second, mid_send.receiver
    first.kill()
    # Once first's claim went unrenewed for its lease, second sends the event again: the same
    # webhook-id, as any retry of a request whose answer never came.
    arrived = await receiver.wait_arrived(2, within=60)
    receiver.release()
    record = await mid_send.record_when_final()
    await wait_all_acked(js)

    assert [r.webhook_id for r in arrived] == [mid_send.delivery] * 2
    assert [a.instance for a in record.attempts] == ["second"]
    assert "delivery taken over from a silent replica" in second.log_text()
    assert len(receiver.arrived) == 2
