"""`ListEvents`: the latest events already on the stream, newest first, with a watch's filters,
bounded, leaving no consumer behind; bad filters and limits refused."""

from __future__ import annotations

import grpc
import pytest
from nats.js import JetStreamContext

from nimbus import streams
from proto.nimbus.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.fixtures.nats import NatsServer
from tests.fixtures.notifier import NotifierFactory
from tests.notifier.conftest import make_event, publish

Filter = webhooks_pb2.EventFilter


async def _list(
    stub: webhooks_pb2_grpc.WebhooksStub, limit: int = 0, **selector: list[str]
) -> list[str]:
    reply = await stub.ListEvents(
        webhooks_pb2.ListEventsRequest(filter=Filter(**selector), limit=limit)
    )
    return [event.id for event in reply.events]


async def test_latest_events_newest_first_filtered_and_bounded(
    nats_env: tuple[NatsServer, JetStreamContext], notifier_factory: NotifierFactory
) -> None:
    server, js = nats_env
    notifier = notifier_factory(server.url)
    async with grpc.aio.insecure_channel(notifier.address) as channel:
        stub = webhooks_pb2_grpc.WebhooksStub(channel)
        assert await _list(stub) == []

        events = [
            make_event(
                "shop/web" if i % 3 else "ops/db",
                tag=f"v{i}",
                action="delete" if i % 10 == 0 else "push",
                seq=i,
            )
            for i in range(120)
        ]
        await publish(js, events)
        consumers = (await js.stream_info(streams.EVENTS_STREAM)).state.consumer_count
        newest = [e.id for e in reversed(events)]

        assert await _list(stub) == newest[:50]
        assert await _list(stub, limit=500) == newest
        assert await _list(stub, limit=7) == newest[:7]
        web = [e.id for e in reversed(events) if e.target.repository == "shop/web"]
        assert await _list(stub, limit=500, repositories=["shop/*"]) == web
        deletes = [e.id for e in reversed(events) if e.action == "delete"]
        assert len(deletes) == 12
        assert await _list(stub, actions=["delete"]) == deletes
        both = [
            e.id
            for e in reversed(events)
            if e.action == "delete" and e.target.repository == "ops/db"
        ]
        assert await _list(stub, actions=["delete"], repositories=["ops/*"]) == both
        assert await _list(stub, repositories=["nothing/*"]) == []
        # Every read removed its consumer.
        after = (await js.stream_info(streams.EVENTS_STREAM)).state.consumer_count
        assert after == consumers

        for limit, selector in (
            (501, {}),
            (0, {"actions": ["pushed"]}),
            (0, {"repositories": [" "]}),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _list(stub, limit=limit, **selector)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
