"""Nothing lost, nothing doubled: SIGKILL mid-burst, and two replicas sharing the consumer."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
from nats.js import JetStreamContext

from proto.nimbus.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.fixtures.nats import NatsServer
from tests.fixtures.notifier import NotifierFactory
from tests.notifier.conftest import ReceiverFactory, add_webhook, make_event, publish


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

    events = [make_event(f"team/app{i % 10}", tag=f"t{i}", seq=i) for i in range(600)]
    await publish(js, events)
    await receiver.wait_delivered(600, within=60)
    # Past the ack wait, a message held too long would have been handed out again.
    await asyncio.sleep(3)

    counts = Counter(r.json()["events"][0]["id"] for r in receiver.requests)
    assert set(counts) == {e.id for e in events}
    assert max(counts.values()) == 1, counts.most_common(3)
    async with grpc.aio.insecure_channel(second.address) as channel:
        records = await all_deliveries(webhooks_pb2_grpc.WebhooksStub(channel), webhook.id)
    assert len(records) == 600
    by_instance = Counter(r.attempts[-1].instance for r in records)
    assert set(by_instance) == {"first", "second"}, by_instance
