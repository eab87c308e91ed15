"""Two redeliveries of one dead delivery at the same moment: both attempts are recorded
(the record is written revision-checked over what is there, never overwritten blind)."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from proto.nimbus.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.notifier.conftest import (
    ReceiverFactory,
    add_webhook,
    make_event,
    publish,
    wait_deliveries,
)

Stub = webhooks_pb2_grpc.WebhooksStub


async def test_concurrent_redeliveries_keep_every_attempt(
    js: JetStreamContext, stub: Stub, receiver_factory: ReceiverFactory
) -> None:
    receiver = await receiver_factory()
    receiver.default_status = 503
    wh = await add_webhook(stub, receiver.url)
    await publish(js, [make_event("team/race", tag="v1")])
    dead = webhooks_pb2.ListDeliveriesRequest(
        webhook_id=wh.id, statuses=[webhooks_pb2.DELIVERY_STATUS_DEAD]
    )
    (record,) = await wait_deliveries(stub, dead, within=60)
    before = await stub.GetDelivery(webhooks_pb2.GetDeliveryRequest(id=record.id))
    arrived = len(receiver.arrived)

    # Both requests reach the receiver before either is answered: both read the same record.
    receiver.hold()
    receiver.default_status = 200
    both = [
        asyncio.ensure_future(stub.Redeliver(webhooks_pb2.RedeliverRequest(id=record.id)))
        for _ in range(2)
    ]
    await receiver.wait_arrived(arrived + 2)
    receiver.release()
    answers = await asyncio.gather(*both)

    after = await stub.GetDelivery(webhooks_pb2.GetDeliveryRequest(id=record.id))
    assert len(after.attempts) == len(before.attempts) + 2, after.attempts
    assert [a.number for a in after.attempts] == list(range(1, len(after.attempts) + 1))
    assert [a.status_code for a in after.attempts[-2:]] == [200, 200]
    assert after.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED
    assert sorted(len(a.attempts) for a in answers) == [
        len(before.attempts) + 1,
        len(before.attempts) + 2,
    ]
