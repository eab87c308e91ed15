"""Notifier tests: a NATS server each, the event stream, a notifier, receivers, a gRPC stub."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import grpc
import nats
import pytest
from nats.js import JetStreamContext

from nimbus import streams
from proto.nimbus.v1 import events_pb2, webhooks_pb2, webhooks_pb2_grpc
from registry.events.publisher import StreamSettings
from tests.fixtures.nats import NatsFactory, NatsServer
from tests.fixtures.notifier import NotifierFactory, NotifierProcess
from tests.notifier.receiver import Receiver

ReceiverFactory = Callable[..., Coroutine[Any, Any, Receiver]]


def make_event(
    repository: str,
    tag: str = "latest",
    action: str = "push",
    media_type: str = "application/vnd.oci.image.manifest.v1+json",
    site: str = "a",
    seq: int = 0,
) -> events_pb2.Event:
    event = events_pb2.Event(id=uuid.uuid4().hex, action=action)
    event.timestamp.GetCurrentTime()
    digest = "sha256:" + f"{seq:064x}"
    event.target.media_type = media_type
    event.target.digest = digest
    event.target.size = 527
    event.target.length = 527
    event.target.repository = repository
    event.target.url = f"http://127.0.0.1:5000/v2/{repository}/manifests/{digest}"
    event.target.tag = tag
    event.request.id = uuid.uuid4().hex
    event.request.method = "PUT"
    event.actor.name = "ci"
    event.source.site = site
    event.source.origin_site = site
    return event


async def publish(js: JetStreamContext, events: Sequence[events_pb2.Event]) -> int:
    """Straight onto the stream, as the registry does (one subject per site and action); the
    stream sequence of the last event."""
    seq = 0
    for event in events:
        ack = await js.publish(
            streams.subject(event.source.site, event.action),
            event.SerializeToString(),
            headers={streams.MSG_ID_HEADER: event.id},
        )
        seq = ack.seq
    return seq


async def wait_settled(js: JetStreamContext, seq: int, within: float = 30.0) -> None:
    """Until the notifier acknowledged every event up to stream sequence ``seq``: each had every
    delivery it will ever make answered and recorded (an event is acknowledged only then)."""
    deadline = time.monotonic() + within
    while True:
        info = await js.consumer_info(streams.EVENTS_STREAM, streams.NOTIFIER_CONSUMER)
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        if floor >= seq:
            return
        assert time.monotonic() < deadline, f"events acknowledged up to {floor} of {seq}"
        await asyncio.sleep(0.05)


async def wait_deliveries(
    stub: webhooks_pb2_grpc.WebhooksStub,
    request: webhooks_pb2.ListDeliveriesRequest,
    within: float = 30.0,
) -> list[webhooks_pb2.Delivery]:
    """Until ListDeliveries answers something for ``request``; that answer."""
    deadline = time.monotonic() + within
    while True:
        listed = await stub.ListDeliveries(request)
        if listed.deliveries:
            return list(listed.deliveries)
        assert time.monotonic() < deadline, f"no deliveries within {within}s for {request}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def nats_env(nats_factory: NatsFactory) -> AsyncIterator[tuple[NatsServer, JetStreamContext]]:
    """A NATS server of this test's own, with the event stream the registry would create."""
    server = nats_factory()
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await js.add_stream(StreamSettings(0, 0, 0, duplicate_window=120).config())
    yield server, js
    await nc.close()


@pytest.fixture
def js(nats_env: tuple[NatsServer, JetStreamContext]) -> JetStreamContext:
    return nats_env[1]


@pytest.fixture
def notifier(
    nats_env: tuple[NatsServer, JetStreamContext], notifier_factory: NotifierFactory
) -> NotifierProcess:
    return notifier_factory(nats_env[0].url)


@pytest.fixture
async def stub(notifier: NotifierProcess) -> AsyncIterator[webhooks_pb2_grpc.WebhooksStub]:
    async with grpc.aio.insecure_channel(notifier.address) as channel:
        yield webhooks_pb2_grpc.WebhooksStub(channel)


@pytest.fixture
async def receiver_factory() -> AsyncIterator[ReceiverFactory]:
    made: list[Receiver] = []

    async def make(
        start: bool = True, port: int | None = None, tls: ssl.SSLContext | None = None
    ) -> Receiver:
        receiver = Receiver(port, tls)
        made.append(receiver)
        return await receiver.start() if start else receiver

    yield make
    for receiver in made:
        await receiver.stop()


async def add_webhook(
    stub: webhooks_pb2_grpc.WebhooksStub, url: str, **fields: Any
) -> webhooks_pb2.Webhook:
    webhook: webhooks_pb2.Webhook = await stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(webhook=webhooks_pb2.Webhook(url=url, **fields))
    )
    return webhook
