"""Webhook deliveries end to end: real nats-server, registry, notifier and aiohttp receivers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import aiohttp
import grpc
import pytest
from nats.js import JetStreamContext
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from notifier import signing
from notifier.deliveries import delivery_id
from proto.nimbus.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsServer
from tests.fixtures.notifier import NotifierFactory, NotifierProcess
from tests.fixtures.registry import RegistryFactory
from tests.notifier.conftest import (
    ReceiverFactory,
    add_webhook,
    make_event,
    publish,
    wait_deliveries,
    wait_settled,
)
from tests.registry.oci_client import OCIClient

Stub = webhooks_pb2_grpc.WebhooksStub


async def test_push_delivers_a_signed_webhook_that_standardwebhooks_verifies(
    nats_env: tuple[NatsServer, JetStreamContext],
    registry_factory: RegistryFactory,
    stub: Stub,
    receiver_factory: ReceiverFactory,
) -> None:
    server, _ = nats_env
    registry = registry_factory(["--nats", server.url, "--site", "east"])
    receiver = await receiver_factory()
    # Two secrets, as during a rotation: each verifies on its own.
    old, new = signing.new_secret(), signing.new_secret()
    webhook = await add_webhook(
        stub,
        receiver.url,
        secrets=[old, new],
        # Blob uploads are pushes too; the tag selects the manifest's event.
        filter=webhooks_pb2.EventFilter(actions=["push"], tags=["v*"]),
    )
    image = make_image(seed=7)
    async with aiohttp.ClientSession() as session:
        await OCIClient(session, registry.url).push_image("team/app", image, "v1.2")

    (got,) = await receiver.wait_delivered(1)
    body = got.json()
    for secret in (old, new):
        assert StandardWebhook(secret).verify(got.body, got.headers) == body
    assert got.headers["Content-Type"] == "application/vnd.docker.distribution.events.v1+json"
    assert got.headers["Nimbus-Event-Type"] == "push"
    (event,) = body["events"]
    assert event["action"] == "push"
    assert event["target"]["repository"] == "team/app"
    assert event["target"]["tag"] == "v1.2"
    assert event["target"]["digest"] == image.digest
    assert event["target"]["size"] == len(image.manifest.data)
    assert event["source"]["site"] == "east"

    # A tampered body, a foreign secret or an old timestamp fail verification.
    verifier = StandardWebhook(new)
    tampered = got.body.replace(b"team/app", b"team/evil")
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered, got.headers)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(signing.new_secret()).verify(got.body, got.headers)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    replayed = {
        **got.headers,
        "webhook-timestamp": str(int(long_ago.timestamp())),
        "webhook-signature": verifier.sign(got.webhook_id, long_ago, got.body.decode()),
    }
    with pytest.raises(WebhookVerificationError, match="too old"):
        verifier.verify(got.body, replayed)

    # The delivery is on record, with the attempt and the receiver's answer.
    listed = await stub.ListDeliveries(webhooks_pb2.ListDeliveriesRequest(webhook_id=webhook.id))
    (record,) = listed.deliveries
    assert record.id == got.webhook_id
    assert record.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED
    full = await stub.GetDelivery(webhooks_pb2.GetDeliveryRequest(id=record.id))
    assert full.body == got.body
    (attempt,) = full.attempts
    assert attempt.status_code == 200
    assert attempt.response_body_excerpt == "answer 200"
    assert attempt.latency_ms > 0
    assert {h.name for h in attempt.request_headers} >= {"webhook-id", "webhook-signature"}


async def test_filters_select_the_right_webhooks(
    js: JetStreamContext, stub: Stub, receiver_factory: ReceiverFactory
) -> None:
    everything, team, release, deletes, index, off = [await receiver_factory() for _ in range(6)]
    await add_webhook(stub, everything.url)
    await add_webhook(
        stub, team.url, filter=webhooks_pb2.EventFilter(repositories=["team/*", "ops/tool"])
    )
    await add_webhook(stub, release.url, filter=webhooks_pb2.EventFilter(tags=["v*"]))
    await add_webhook(stub, deletes.url, filter=webhooks_pb2.EventFilter(actions=["delete"]))
    await add_webhook(
        stub,
        index.url,
        filter=webhooks_pb2.EventFilter(media_types=["application/vnd.oci.image.index.v1+json"]),
    )
    await add_webhook(stub, off.url, enabled=False)

    events = {
        "team-v": make_event("team/app", tag="v1"),
        "team-dev": make_event("team/lib", tag="dev"),
        "ops": make_event("ops/tool", tag="latest"),
        "other-v": make_event("other/app", tag="v2"),
        "del": make_event("other/app", tag="", action="delete"),
        "index": make_event(
            "base/os", tag="3", media_type="application/vnd.oci.image.index.v1+json"
        ),
    }
    last = await publish(js, list(events.values()))
    names = {e.id: name for name, e in events.items()}

    def seen(receiver_requests: list) -> set[str]:
        return {names[r.json()["events"][0]["id"]] for r in receiver_requests}

    assert seen(await everything.wait_delivered(6)) == set(events)
    assert seen(await team.wait_delivered(3)) == {"team-v", "team-dev", "ops"}
    assert seen(await release.wait_delivered(2)) == {"team-v", "other-v"}
    assert seen(await deletes.wait_delivered(1)) == {"del"}
    assert seen(await index.wait_delivered(1)) == {"index"}
    # Every event acknowledged: each had all the deliveries it will ever make.
    await wait_settled(js, last)
    assert len(team.requests) == 3 and len(release.requests) == 2
    assert len(deletes.requests) == 1 and len(index.requests) == 1
    assert off.requests == []


async def test_every_body_format(
    js: JetStreamContext, stub: Stub, receiver_factory: ReceiverFactory
) -> None:
    v1, v2, cloud = [await receiver_factory() for _ in range(3)]
    await add_webhook(stub, v1.url, body_format=webhooks_pb2.BODY_FORMAT_DISTRIBUTION_V1)
    await add_webhook(
        stub,
        v2.url,
        body_format=webhooks_pb2.BODY_FORMAT_DISTRIBUTION_V2,
        headers={"Authorization": "Bearer receiver-token"},
    )
    wh = await add_webhook(stub, cloud.url, body_format=webhooks_pb2.BODY_FORMAT_CLOUDEVENTS)
    event = make_event("team/app", tag="v3", site="west")
    await publish(js, [event])

    (got_v1,) = await v1.wait_delivered(1)
    (got_v2,) = await v2.wait_delivered(1)
    (got_cloud,) = await cloud.wait_delivered(1)
    assert got_v1.headers["Content-Type"] == "application/vnd.docker.distribution.events.v1+json"
    assert got_v2.headers["Content-Type"] == "application/vnd.docker.distribution.events.v2+json"
    assert got_v2.headers["Authorization"] == "Bearer receiver-token"
    for got in (got_v1, got_v2):
        (doc,) = got.json()["events"]
        assert doc["id"] == event.id
        assert doc["action"] == "push"
        assert doc["target"]["size"] == 527 and doc["target"]["length"] == 527
        assert doc["target"]["mediaType"] == event.target.media_type
        assert doc["request"]["method"] == "PUT"
        assert doc["actor"] == {"name": "ci"}
        assert doc["source"]["site"] == "west"

    assert got_cloud.headers["Content-Type"] == "application/cloudevents+json"
    doc = got_cloud.json()
    assert doc["specversion"] == "1.0"
    assert doc["id"] == event.id
    assert doc["type"] == "io.nimbus.registry.push"
    assert doc["source"] == "/nimbus/sites/west"
    assert doc["subject"] == "team/app:v3"
    assert datetime.fromisoformat(doc["time"].replace("Z", "+00:00")).tzinfo is not None
    assert doc["data"]["target"]["digest"] == event.target.digest
    assert StandardWebhook(wh.secrets[0]).verify(got_cloud.body, got_cloud.headers) == doc


async def test_500_then_200_is_retried_with_the_same_id(
    js: JetStreamContext, stub: Stub, receiver_factory: ReceiverFactory
) -> None:
    receiver = await receiver_factory()
    receiver.script.extend([500, 503, 200])
    wh = await add_webhook(stub, receiver.url)
    await publish(js, [make_event("team/app")])

    await receiver.wait_delivered(1)
    assert [r.status for r in receiver.requests] == [500, 503, 200]
    # One delivery: the id is stable across retries; each attempt is signed anew.
    assert len({r.webhook_id for r in receiver.requests}) == 1
    for r in receiver.requests:
        StandardWebhook(wh.secrets[0]).verify(r.body, r.headers)
    full = await stub.GetDelivery(
        webhooks_pb2.GetDeliveryRequest(id=receiver.requests[0].webhook_id)
    )
    assert full.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED
    assert [a.status_code for a in full.attempts] == [500, 503, 200]
    assert [a.number for a in full.attempts] == [1, 2, 3]
    assert full.attempts[0].error == "HTTP 500"


async def test_429_retry_after_is_honoured_and_4xx_is_not_retried(
    js: JetStreamContext, stub: Stub, receiver_factory: ReceiverFactory
) -> None:
    slow = await receiver_factory()
    slow.script.append(429)
    slow.extra_headers = {"Retry-After": "1"}
    gone = await receiver_factory()
    gone.default_status = 410
    await add_webhook(stub, slow.url)
    wh_gone = await add_webhook(stub, gone.url)
    await publish(js, [make_event("team/app")])

    await slow.wait_delivered(1)
    first, second = slow.requests
    assert (first.status, second.status) == (429, 200)
    # Waited as asked: the receiver's own clock saw at least a second between the two.
    assert second.at - first.at >= 0.9
    await gone.wait_requests(1)
    dead = webhooks_pb2.ListDeliveriesRequest(
        webhook_id=wh_gone.id, statuses=[webhooks_pb2.DELIVERY_STATUS_DEAD]
    )
    (record,) = await wait_deliveries(stub, dead)
    assert record.status == webhooks_pb2.DELIVERY_STATUS_DEAD
    assert len(gone.requests) == 1


async def test_an_event_the_notifier_cannot_render_is_recorded_dead_and_its_lane_goes_on(
    js: JetStreamContext,
    notifier: NotifierProcess,
    stub: Stub,
    receiver_factory: ReceiverFactory,
) -> None:
    receiver = await receiver_factory()
    wh = await add_webhook(stub, receiver.url)
    # A timestamp past the year 9999 has no JSON form: rendering the body fails every time.
    broken = make_event("team/app", tag="v1", seq=1)
    broken.timestamp.seconds = 10**12
    # The same repository and webhook, so the same lane, right behind it.
    later = make_event("team/app", tag="v2", seq=2)
    last = await publish(js, [broken, later])

    (got,) = await receiver.wait_delivered(1, within=20)
    assert got.json()["events"][0]["id"] == later.id
    await wait_settled(js, last)  # both acknowledged: the broken one is not held either

    record = await stub.GetDelivery(
        webhooks_pb2.GetDeliveryRequest(id=delivery_id(wh.id, broken.id))
    )
    assert record.status == webhooks_pb2.DELIVERY_STATUS_DEAD
    assert (record.event_id, record.repository, record.tag) == (broken.id, "team/app", "v1")
    (attempt,) = record.attempts
    assert attempt.error.startswith("internal error: ")
    assert "Timestamp is not valid" in attempt.error
    assert attempt.status_code == 0
    dead = webhooks_pb2.ListDeliveriesRequest(
        webhook_id=wh.id, statuses=[webhooks_pb2.DELIVERY_STATUS_DEAD]
    )
    assert [d.id for d in (await stub.ListDeliveries(dead)).deliveries] == [record.id]
    # Given up after a few tries, with the traceback in the log.
    logged = [json.loads(line) for line in notifier.log_text().splitlines() if line.startswith("{")]
    (gave_up,) = [e for e in logged if e.get("msg") == "job failed; giving up"]
    assert gave_up["event"] == broken.id and gave_up["webhook"] == wh.id
    assert "Traceback (most recent call last)" in gave_up["error"]
    retried = [e for e in logged if e.get("msg") == "job failed; retrying"]
    assert len(retried) == 2  # NIMBUS_CONSUMER_JOB_ATTEMPTS is 3 by default
    # Nothing to send again: it never had a body.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Redeliver(webhooks_pb2.RedeliverRequest(id=record.id))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_receiver_that_never_answers_is_dead_lettered_then_redelivered(
    js: JetStreamContext, stub: Stub, receiver_factory: ReceiverFactory
) -> None:
    receiver = await receiver_factory()
    receiver.hang = True
    wh = await add_webhook(stub, receiver.url)
    event = make_event("team/app", tag="v9")
    await publish(js, [event])

    dead = webhooks_pb2.ListDeliveriesRequest(
        webhook_id=wh.id, statuses=[webhooks_pb2.DELIVERY_STATUS_DEAD]
    )
    (record,) = await wait_deliveries(stub, dead, within=40)
    assert record.event_id == event.id
    assert record.repository == "team/app" and record.tag == "v9"
    full = await stub.GetDelivery(webhooks_pb2.GetDeliveryRequest(id=record.id))
    assert len(full.attempts) == 5  # NIMBUS_DELIVERY_MAX_ATTEMPTS in the test settings
    assert all(a.error == "timed out" and a.status_code == 0 for a in full.attempts)
    succeeded = webhooks_pb2.ListDeliveriesRequest(
        webhook_id=wh.id, statuses=[webhooks_pb2.DELIVERY_STATUS_SUCCEEDED]
    )
    assert not (await stub.ListDeliveries(succeeded)).deliveries

    receiver.hang = False
    again = await stub.Redeliver(webhooks_pb2.RedeliverRequest(id=record.id))
    assert again.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED
    assert again.attempts[-1].status_code == 200
    (got,) = receiver.delivered
    assert got.webhook_id == record.id
    assert json.loads(got.body)["events"][0]["id"] == event.id
    StandardWebhook(wh.secrets[0]).verify(got.body, got.headers)
    assert [d.id for d in (await stub.ListDeliveries(succeeded)).deliveries] == [record.id]


async def test_receiver_down_during_200_pushes_gets_all_in_order_and_others_are_not_held(
    nats_env: tuple[NatsServer, JetStreamContext],
    notifier_factory: NotifierFactory,
    receiver_factory: ReceiverFactory,
) -> None:
    server, js = nats_env
    # Patient settings: a receiver down for a while is waited for, not dead-lettered.
    notifier = notifier_factory(server.url, env={"NIMBUS_DELIVERY_MAX_ATTEMPTS": "10000"})
    channel = grpc.aio.insecure_channel(notifier.address)
    stub = webhooks_pb2_grpc.WebhooksStub(channel)
    healthy = await receiver_factory()
    down = await receiver_factory(start=False)  # nothing listens on its port yet
    await add_webhook(stub, healthy.url)
    await add_webhook(stub, down.url)
    repositories = [f"team/app{i}" for i in range(4)]
    events = [make_event(repositories[i % 4], tag=f"t{i}", seq=i) for i in range(200)]
    await publish(js, events)

    # The healthy receiver gets everything while the other is still down.
    await healthy.wait_delivered(200)
    assert down.requests == []

    await down.start()
    got = await down.wait_delivered(200, within=60)
    for receiver in (healthy, down):
        ids = [r.json()["events"][0]["id"] for r in receiver.delivered]
        assert sorted(ids) == sorted(e.id for e in events)
        for repo in repositories:
            sent = [e.id for e in events if e.target.repository == repo]
            received = [
                r.json()["events"][0]["id"]
                for r in receiver.delivered
                if r.json()["events"][0]["target"]["repository"] == repo
            ]
            # In order per repository; a retried event may repeat, never overtake.
            assert list(dict.fromkeys(received)) == sent
    assert len({r.webhook_id for r in got}) == 200
    await channel.close()
