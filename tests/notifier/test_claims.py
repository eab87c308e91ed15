"""The delivery record is its own claim: created before the first attempt with the sender's name
and lease in its entry's header, given up with the final write, and never a second key beside
it. Two replicas on one NATS never send one delivery at the same moment, and a replica killed
mid-delivery has its deliveries finished by the other."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import grpc
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from nimbus import streams
from notifier.deliveries import CLAIM_HEADER, delivery_id
from proto.nimbus.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.fixtures.nats import NatsServer
from tests.fixtures.notifier import NotifierFactory
from tests.notifier.conftest import ReceiverFactory, add_webhook, make_event, publish
from tests.notifier.test_durability import all_deliveries, wait_all_acked, wait_log

Stub = webhooks_pb2_grpc.WebhooksStub
# A lease of 2 s (two ack waits) and progress acks every third of a second.
QUICK_LEASE = {"NIMBUS_CONSUMER_ACK_WAIT": "1", "NIMBUS_DELIVERY_TIMEOUT": "60"}


async def entry(js: JetStreamContext, key: str) -> tuple[webhooks_pb2.Delivery, dict[str, str]]:
    """A delivery record as stored, and the headers of its entry."""
    bucket = streams.DELIVERIES_BUCKET
    msg = await js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}")
    return webhooks_pb2.Delivery.FromString(msg.data or b""), dict(msg.headers or {})


async def wait_final(stub: Stub, ident: str, within: float = 30.0) -> webhooks_pb2.Delivery:
    deadline = time.monotonic() + within
    while True:
        record: webhooks_pb2.Delivery = await stub.GetDelivery(
            webhooks_pb2.GetDeliveryRequest(id=ident)
        )
        if record.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED:
            return record
        assert time.monotonic() < deadline, f"{ident} not delivered within {within}s"
        await asyncio.sleep(0.05)


async def test_the_record_is_created_as_the_claim_before_sending_and_released_when_final(
    nats_env: tuple[NatsServer, JetStreamContext],
    notifier_factory: NotifierFactory,
    receiver_factory: ReceiverFactory,
) -> None:
    server, js = nats_env
    notifier = notifier_factory(server.url, ["--instance", "solo"])
    receiver = await receiver_factory()
    async with grpc.aio.insecure_channel(notifier.address) as channel:
        stub = Stub(channel)
        webhook = await add_webhook(stub, receiver.url)
        receiver.hold()
        event = make_event("team/app")
        await publish(js, [event])
        await receiver.wait_arrived(1)
        ident = delivery_id(webhook.id, event.id)
        key = f"{webhook.id}.{ident}"

        # The request is at the receiver, unanswered: its record already names the sender.
        record, headers = await entry(js, key)
        assert record.status == webhooks_pb2.DELIVERY_STATUS_RETRYING
        assert list(record.attempts) == []
        assert record.body == receiver.arrived[0].body
        owner, lease = headers[CLAIM_HEADER].rsplit(" ", 1)
        assert owner.startswith("solo/")
        assert float(lease) == 2 * 3  # two ack waits of the tests' notifier

        receiver.release()
        final = await wait_final(stub, ident)
        assert [a.instance for a in final.attempts] == ["solo"]
        record, headers = await entry(js, key)
        assert record.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED
        assert CLAIM_HEADER not in headers
        await wait_all_acked(js)

    kv: KeyValue = await js.key_value(streams.DELIVERIES_BUCKET)
    assert await kv.keys() == [key]  # the record alone: no claim key beside it


async def test_two_replicas_never_send_one_delivery_at_once_even_when_one_stalls(
    nats_env: tuple[NatsServer, JetStreamContext],
    notifier_factory: NotifierFactory,
    receiver_factory: ReceiverFactory,
) -> None:
    server, js = nats_env
    first = notifier_factory(server.url, ["--instance", "first"], env=QUICK_LEASE)
    receiver = await receiver_factory()
    # Each request stays a while at the receiver, so two senders of one delivery would overlap.
    receiver.answer_delay = 0.3
    async with grpc.aio.insecure_channel(first.address) as channel:
        webhook = await add_webhook(Stub(channel), receiver.url)
    # Started after the webhook exists, second has it from the start.
    second = notifier_factory(server.url, ["--instance", "second"], env=QUICK_LEASE)
    async with grpc.aio.insecure_channel(second.address) as channel:
        stub = Stub(channel)
        events = [make_event(f"team/app{i % 10}", tag=f"t{i}", seq=i) for i in range(200)]
        await publish(js, events)
        await receiver.wait_delivered(30, within=60)
        assert first.proc is not None
        # Stalled past the ack wait, first's events go to second while first still holds
        # claims (and has requests at the receiver); it comes back before its lease lapses.
        first.proc.send_signal(signal.SIGSTOP)
        try:
            await wait_log(second, "delivery claimed by another replica; waiting")
        finally:
            first.proc.send_signal(signal.SIGCONT)

        await receiver.wait_delivered(200, within=90)
        await wait_all_acked(js, within=60)
        records = await all_deliveries(stub, webhook.id)

    sent = Counter(r.webhook_id for r in receiver.arrived)
    wanted = {delivery_id(webhook.id, e.id) for e in events}
    assert set(sent) == wanted
    assert max(receiver.most_at_once.values()) == 1, receiver.most_at_once.most_common(3)
    # A second request of a delivery comes only after a takeover (first silent a whole lease).
    if max(sent.values()) > 1:
        assert "delivery taken over from a silent replica" in second.log_text()
    assert {r.id for r in records} == wanted
    assert all(r.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED for r in records)
    assert {r.attempts[-1].instance for r in records} == {"first", "second"}


async def test_a_replica_killed_with_deliveries_in_flight_has_all_of_them_finished(
    nats_env: tuple[NatsServer, JetStreamContext],
    notifier_factory: NotifierFactory,
    receiver_factory: ReceiverFactory,
) -> None:
    server, js = nats_env
    first = notifier_factory(server.url, ["--instance", "first"], env=QUICK_LEASE)
    receiver = await receiver_factory()
    async with grpc.aio.insecure_channel(first.address) as channel:
        webhook = await add_webhook(Stub(channel), receiver.url)
    receiver.hold()
    events = [make_event(f"team/app{i}", seq=i) for i in range(8)]
    await publish(js, events)
    # One request per repository at the receiver, each under first's claim.
    await receiver.wait_arrived(len(events))
    second = notifier_factory(server.url, ["--instance", "second"], env=QUICK_LEASE)
    first.kill()
    receiver.release()

    async with grpc.aio.insecure_channel(second.address) as channel:
        stub = Stub(channel)
        finals = [await wait_final(stub, delivery_id(webhook.id, e.id), 60) for e in events]
    await wait_all_acked(js, within=60)
    await wait_log(second, "delivery taken over from a silent replica")

    # first's requests were answered, but it died before recording them: second sent each
    # again (the same webhook-id), once its claim went unrenewed for a lease.
    by_id = Counter(r.webhook_id for r in receiver.arrived)
    assert set(by_id) == {f.id for f in finals}
    assert set(by_id.values()) == {2}
    assert all([a.instance for a in f.attempts] == ["second"] for f in finals)
