"""The Webhooks gRPC API and `nimbus ctl webhooks|events` against a live notifier."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from nats.js import JetStreamContext
from standardwebhooks.webhooks import Webhook as StandardWebhook

from notifier import signing
from proto.nimbus.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.fixtures.nats import NatsServer
from tests.fixtures.notifier import NotifierFactory, NotifierProcess
from tests.notifier.conftest import (
    ReceiverFactory,
    add_webhook,
    make_event,
    publish,
    wait_deliveries,
)

Stub = webhooks_pb2_grpc.WebhooksStub


async def test_webhook_crud_and_validation(stub: Stub, receiver_factory: ReceiverFactory) -> None:
    receiver = await receiver_factory()
    created = await add_webhook(
        stub,
        receiver.url,
        filter=webhooks_pb2.EventFilter(repositories=["team/*"]),
        headers={"X-Team": "a"},
        description="deploys",
    )
    assert created.id.startswith("wh_")
    assert created.enabled  # on unless asked otherwise
    (secret,) = created.secrets
    signing.secret_key(secret)  # a generated whsec_ secret
    assert created.body_format == webhooks_pb2.BODY_FORMAT_DISTRIBUTION_V1
    assert await stub.GetWebhook(webhooks_pb2.GetWebhookRequest(id=created.id)) == created
    listed = await stub.ListWebhooks(webhooks_pb2.ListWebhooksRequest())
    assert [w.id for w in listed.webhooks] == [created.id]

    # Rotation: a second secret beside the first; only the masked fields change.
    rotated = signing.new_secret()
    change = webhooks_pb2.Webhook(id=created.id, secrets=[secret, rotated], enabled=False)
    updated = await stub.UpdateWebhook(
        webhooks_pb2.UpdateWebhookRequest(
            webhook=change, update_mask=FieldMask(paths=["secrets", "enabled"])
        )
    )
    assert list(updated.secrets) == [secret, rotated]
    assert not updated.enabled
    assert updated.url == receiver.url and updated.description == "deploys"
    assert list(updated.filter.repositories) == ["team/*"]
    assert updated.updated_at.ToNanoseconds() > created.updated_at.ToNanoseconds()

    bad: list[tuple[dict[str, Any], str]] = [
        ({"url": "ftp://x/"}, "url"),
        ({"url": receiver.url, "secrets": ["not-a-secret"]}, "secret"),
        ({"url": receiver.url, "filter": webhooks_pb2.EventFilter(actions=["jump"])}, "jump"),
        ({"url": receiver.url, "headers": {"webhook-id": "x"}}, "set by the notifier"),
    ]
    for fields, words in bad:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateWebhook(
                webhooks_pb2.CreateWebhookRequest(webhook=webhooks_pb2.Webhook(**fields))
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=webhooks_pb2.Webhook(id=created.id), update_mask=FieldMask(paths=["id"])
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListDeliveries(webhooks_pb2.ListDeliveriesRequest())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    await stub.DeleteWebhook(webhooks_pb2.DeleteWebhookRequest(id=created.id))
    for call, request in (
        (stub.GetWebhook, webhooks_pb2.GetWebhookRequest(id=created.id)),
        (stub.DeleteWebhook, webhooks_pb2.DeleteWebhookRequest(id=created.id)),
        (stub.GetDelivery, webhooks_pb2.GetDeliveryRequest(id="msg_nothing")),
        (stub.Redeliver, webhooks_pb2.RedeliverRequest(id="msg_nothing")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call(request)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_test_webhook_sends_a_signed_ping(
    stub: Stub, receiver_factory: ReceiverFactory
) -> None:
    receiver = await receiver_factory()
    receiver.default_status = 202
    webhook = await add_webhook(
        stub, receiver.url, body_format=webhooks_pb2.BODY_FORMAT_CLOUDEVENTS
    )
    attempt = await stub.TestWebhook(webhooks_pb2.TestWebhookRequest(id=webhook.id))
    assert attempt.status_code == 202
    assert attempt.response_body_excerpt == "answer 202"
    (got,) = receiver.requests
    doc = StandardWebhook(webhook.secrets[0]).verify(got.body, got.headers)
    assert doc["type"] == "io.nimbus.registry.ping"
    # A test is not a delivery: nothing is recorded.
    listed = await stub.ListDeliveries(webhooks_pb2.ListDeliveriesRequest(webhook_id=webhook.id))
    assert list(listed.deliveries) == []


async def test_token_is_required_and_reflection_lists_the_service(
    nats_env: tuple[NatsServer, JetStreamContext], notifier_factory: NotifierFactory
) -> None:
    notifier = notifier_factory(nats_env[0].url, ["--admin-token", "s3cret"])
    async with grpc.aio.insecure_channel(notifier.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await Stub(channel).ListWebhooks(webhooks_pb2.ListWebhooksRequest())
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = await Stub(channel).ListWebhooks(
            webhooks_pb2.ListWebhooksRequest(), metadata=(("authorization", "Bearer s3cret"),)
        )
        assert list(listed.webhooks) == []

    def reflected() -> list[str]:
        with grpc.insecure_channel(
            notifier.address,
        ) as channel:
            intercepted = grpc.intercept_channel(channel, _BearerInterceptor("s3cret"))
            return list(ProtoReflectionDescriptorDatabase(intercepted).get_services())

    assert "nimbus.v1.Webhooks" in await asyncio.to_thread(reflected)


class _BearerInterceptor(grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self._token}")]
        return continuation(details._replace(metadata=metadata), requests)


async def ctl(notifier: NotifierProcess, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nimbus.cli",
        "ctl",
        "--notifier",
        notifier.address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ctl_json(notifier: NotifierProcess, *args: str) -> Any:
    code, out, err = await ctl(notifier, "--json", *args)
    assert code == 0, err
    return json.loads(out)


async def test_ctl_webhooks_commands(
    js: JetStreamContext, notifier: NotifierProcess, receiver_factory: ReceiverFactory
) -> None:
    receiver = await receiver_factory()
    created = await ctl_json(
        notifier,
        "webhooks", "add", receiver.url, "--repo", "team/*", "--action", "push",
        "--header", "X-Team=a", "--format", "v2",
    )  # fmt: skip
    hook = created["id"]
    assert created["filter"]["repositories"] == ["team/*"]
    assert created["body_format"] == "BODY_FORMAT_DISTRIBUTION_V2"

    code, table, _ = await ctl(notifier, "webhooks", "list")
    assert code == 0
    assert hook in table and "repo=team/*" in table and "v2" in table

    rotated = signing.new_secret()
    updated = await ctl_json(notifier, "webhooks", "update", hook, "--add-secret", rotated)
    assert updated["secrets"] == [created["secrets"][0], rotated]
    assert updated["filter"]["repositories"] == ["team/*"]  # untouched
    got = await ctl_json(notifier, "webhooks", "get", hook)
    assert got["secrets"] == updated["secrets"]

    code, out, _ = await ctl(notifier, "webhooks", "test", hook)
    assert code == 0 and "200" in out

    receiver.script.extend([500] * 5)  # more failures than the test settings' attempts
    event = make_event("team/app", tag="v1")
    await publish(js, [event])
    async with grpc.aio.insecure_channel(notifier.address) as channel:
        dead = webhooks_pb2.ListDeliveriesRequest(
            webhook_id=hook, statuses=[webhooks_pb2.DELIVERY_STATUS_DEAD]
        )
        await wait_deliveries(Stub(channel), dead)
    (record,) = await ctl_json(notifier, "webhooks", "deliveries", hook, "--status", "dead")
    assert record["event_id"] == event.id
    code, out, _ = await ctl(notifier, "webhooks", "delivery", record["id"])
    assert code == 0 and "HTTP 500" in out and event.id in out

    code, out, _ = await ctl(notifier, "webhooks", "redeliver", record["id"])
    assert code == 0, out
    assert receiver.requests[-1].status == 200
    assert receiver.requests[-1].webhook_id == record["id"]
    succeeded = await ctl_json(
        notifier, "webhooks", "deliveries", hook, "--status", "succeeded", "--since", "1h"
    )
    assert [d["id"] for d in succeeded] == [record["id"]]
    assert await ctl_json(notifier, "webhooks", "deliveries", hook, "--until", "1h") == []

    code, out, _ = await ctl(notifier, "webhooks", "rm", hook)
    assert code == 0
    code, _, err = await ctl(notifier, "webhooks", "get", hook)
    assert code == 1 and "not found" in err


async def test_ctl_errors_are_clear_when_the_notifier_is_unreachable(
    notifier: NotifierProcess,
) -> None:
    notifier.stop()
    code, _, err = await ctl(notifier, "--timeout", "2", "webhooks", "list")
    assert code == 1
    assert f"cannot reach notifier at {notifier.address}" in err or "did not answer" in err


async def test_ctl_events_watch_streams_filtered_events(
    js: JetStreamContext, notifier: NotifierProcess
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nimbus.cli", "ctl", "--notifier", notifier.address, "--json",
        "events", "watch", "--repo", "team/*",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        # The watch starts from now: publish until the first event shows it is listening.
        first: dict[str, Any] | None = None
        for i in range(100):
            await publish(js, [make_event("other/app", seq=i), make_event("team/app", seq=i)])
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 0.3)
            except TimeoutError:
                continue
            first = json.loads(line)
            break
        assert first is not None, "events watch printed nothing"
        assert first["target"]["repository"] == "team/app"
        events = [make_event(repo, seq=n) for n, repo in enumerate(["other/x", "team/a", "team/b"])]
        await publish(js, events)
        seen: list[str] = []
        while events[2].id not in seen:
            doc = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
            assert doc["target"]["repository"].startswith("team/"), doc
            seen.append(doc["id"])
        assert events[0].id not in seen
        assert seen.index(events[1].id) < seen.index(events[2].id)
    finally:
        proc.terminate()
        await proc.wait()
