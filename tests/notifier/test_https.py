"""Webhooks to https receivers: a private CA named per webhook, verification never off."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from nats.js import JetStreamContext
from standardwebhooks.webhooks import Webhook as StandardWebhook

from proto.nimbus.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.fixtures.notifier import NotifierProcess
from tests.notifier.conftest import (
    ReceiverFactory,
    add_webhook,
    make_event,
    publish,
    wait_deliveries,
)
from tests.notifier.test_api import ctl, ctl_json
from tests.tls.conftest import make_certs

Stub = webhooks_pb2_grpc.WebhooksStub


def server_context(directory: Path) -> tuple[ssl.SSLContext, str]:
    """A receiver's TLS context with a certificate of a CA of its own; that CA's PEM."""
    certs = make_certs(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certs.cert), str(certs.key))
    return context, certs.authority.cert_pem.decode()


async def test_https_receiver_of_a_private_ca_is_verified_by_the_webhooks_own_ca(
    js: JetStreamContext, stub: Stub, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    context, ca_pem = server_context(tmp_path / "tls")
    receiver = await receiver_factory(tls=context)
    assert receiver.url.startswith("https://")
    trusted = await add_webhook(stub, receiver.url, ca_pem=ca_pem)
    untrusted = await add_webhook(stub, receiver.url)
    assert trusted.ca_pem == ca_pem and not untrusted.ca_pem

    event = make_event("team/app", tag="v1")
    await publish(js, [event])

    (got,) = await receiver.wait_delivered(1)
    succeeded = webhooks_pb2.ListDeliveriesRequest(
        webhook_id=trusted.id, statuses=[webhooks_pb2.DELIVERY_STATUS_SUCCEEDED]
    )
    assert [d.id for d in await wait_deliveries(stub, succeeded)] == [got.webhook_id]
    assert json.loads(got.body)["events"][0]["id"] == event.id
    StandardWebhook(trusted.secrets[0]).verify(got.body, got.headers)

    # The system's CAs do not know this one: never sent, retried, then dead with the reason.
    dead = webhooks_pb2.ListDeliveriesRequest(
        webhook_id=untrusted.id, statuses=[webhooks_pb2.DELIVERY_STATUS_DEAD]
    )
    (record,) = await wait_deliveries(stub, dead, within=40)
    full = await stub.GetDelivery(webhooks_pb2.GetDeliveryRequest(id=record.id))
    assert len(full.attempts) == 5  # NIMBUS_DELIVERY_MAX_ATTEMPTS in the test settings
    assert all("certificate verify failed" in a.error for a in full.attempts), [
        a.error for a in full.attempts
    ]
    assert all(a.status_code == 0 for a in full.attempts)
    assert len(receiver.requests) == 1  # the untrusted webhook's body never reached it

    # Naming the CA afterwards lets the dead delivery go out on a redelivery.
    await stub.UpdateWebhook(
        webhooks_pb2.UpdateWebhookRequest(
            webhook=webhooks_pb2.Webhook(id=untrusted.id, ca_pem=ca_pem),
            update_mask=FieldMask(paths=["ca_pem"]),
        )
    )
    again = await stub.Redeliver(webhooks_pb2.RedeliverRequest(id=record.id))
    assert again.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED
    assert again.attempts[-1].status_code == 200
    assert receiver.delivered[-1].webhook_id == record.id
    StandardWebhook(untrusted.secrets[0]).verify(
        receiver.delivered[-1].body, receiver.delivered[-1].headers
    )


async def test_a_ca_of_another_authority_is_not_enough(
    js: JetStreamContext, stub: Stub, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    context, _ = server_context(tmp_path / "receiver")
    _, other_ca = server_context(tmp_path / "other")
    receiver = await receiver_factory(tls=context)
    wh = await add_webhook(stub, receiver.url, ca_pem=other_ca)
    await publish(js, [make_event("team/app")])
    dead = webhooks_pb2.ListDeliveriesRequest(
        webhook_id=wh.id, statuses=[webhooks_pb2.DELIVERY_STATUS_DEAD]
    )
    (record,) = await wait_deliveries(stub, dead, within=40)
    full = await stub.GetDelivery(webhooks_pb2.GetDeliveryRequest(id=record.id))
    assert "certificate verify failed" in full.attempts[0].error
    assert not receiver.requests


@pytest.mark.parametrize(
    "ca_pem",
    [
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
async def test_a_ca_that_is_not_pem_is_refused(stub: Stub, ca_pem: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await add_webhook(stub, "https://127.0.0.1:9/hook", ca_pem=ca_pem)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ca_pem" in (refused.value.details() or "")
    assert not (await stub.ListWebhooks(webhooks_pb2.ListWebhooksRequest())).webhooks


async def test_ctl_names_a_ca_file_and_can_go_back_to_the_system_cas(
    notifier: NotifierProcess, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    context, ca_pem = server_context(tmp_path / "tls")
    receiver = await receiver_factory(tls=context)
    (tmp_path / "ca.pem").write_text(ca_pem)
    created = await ctl_json(
        notifier, "webhooks", "add", receiver.url, "--ca", str(tmp_path / "ca.pem")
    )
    assert created["ca_pem"] == ca_pem
    code, out, _ = await ctl(notifier, "webhooks", "test", created["id"])
    assert code == 0 and "200" in out

    code, _, err = await ctl(notifier, "webhooks", "add", receiver.url, "--ca", "/nonexistent")
    assert code != 0 and "--ca /nonexistent" in err

    cleared = await ctl_json(notifier, "webhooks", "update", created["id"], "--ca", "")
    assert cleared.get("ca_pem", "") == ""
    code, out, _ = await ctl(notifier, "webhooks", "test", created["id"])
    assert "certificate verify failed" in out
