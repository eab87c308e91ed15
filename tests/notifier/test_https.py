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
from tests.tls.conftest import Certs, make_certs

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


def mtls_receiver_context(directory: Path) -> tuple[ssl.SSLContext, str, Certs]:
    """A receiver that asks every client for a certificate of a client CA of its own: its TLS
    context, the PEM of the CA of its server certificate, and the client CA (which issues)."""
    context, ca_pem = server_context(directory / "server")
    clients = make_certs(directory / "clients")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(clients.ca))
    return context, ca_pem, clients


def client_pair(certs: Certs, name: str) -> tuple[str, str]:
    cert, key = certs.client(name)
    return cert.read_text(), key.read_text()


async def test_a_receiver_asking_for_a_client_certificate_gets_the_webhooks_own(
    js: JetStreamContext, stub: Stub, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    context, ca_pem, clients = mtls_receiver_context(tmp_path / "tls")
    receiver = await receiver_factory(tls=context)
    cert_pem, key_pem = client_pair(clients, "notifier-a")
    with_cert = await add_webhook(
        stub, receiver.url, ca_pem=ca_pem, client_cert_pem=cert_pem, client_key_pem=key_pem
    )
    without = await add_webhook(stub, receiver.url, ca_pem=ca_pem)
    assert with_cert.client_cert_pem == cert_pem and not without.client_cert_pem

    event = make_event("team/app", tag="v1")
    await publish(js, [event])
    (got,) = await receiver.wait_delivered(1)
    assert got.client_name == "notifier-a"
    succeeded = webhooks_pb2.ListDeliveriesRequest(
        webhook_id=with_cert.id, statuses=[webhooks_pb2.DELIVERY_STATUS_SUCCEEDED]
    )
    assert [d.id for d in await wait_deliveries(stub, succeeded)] == [got.webhook_id]
    assert json.loads(got.body)["events"][0]["id"] == event.id
    StandardWebhook(with_cert.secrets[0]).verify(got.body, got.headers)

    # Without a certificate the receiver refuses the handshake: retried, then dead with why.
    dead = webhooks_pb2.ListDeliveriesRequest(
        webhook_id=without.id, statuses=[webhooks_pb2.DELIVERY_STATUS_DEAD]
    )
    (record,) = await wait_deliveries(stub, dead, within=40)
    full = await stub.GetDelivery(webhooks_pb2.GetDeliveryRequest(id=record.id))
    assert len(full.attempts) == 5  # NIMBUS_DELIVERY_MAX_ATTEMPTS in the test settings
    assert all("client certificate" in a.error for a in full.attempts), [
        a.error for a in full.attempts
    ]
    assert all(a.status_code == 0 for a in full.attempts)
    assert len(receiver.requests) == 1

    # Given a certificate afterwards (the key with it), the dead delivery goes out.
    updated = await stub.UpdateWebhook(
        webhooks_pb2.UpdateWebhookRequest(
            webhook=webhooks_pb2.Webhook(
                id=without.id, client_cert_pem=cert_pem, client_key_pem=key_pem
            ),
            update_mask=FieldMask(paths=["client_cert_pem", "client_key_pem"]),
        )
    )
    assert updated.client_cert_pem == cert_pem and not updated.client_key_pem
    again = await stub.Redeliver(webhooks_pb2.RedeliverRequest(id=record.id))
    assert again.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED, again.attempts[-1].error
    assert receiver.delivered[-1].webhook_id == record.id
    assert receiver.delivered[-1].client_name == "notifier-a"

    # A change of something else keeps the key it has (the key is never sent back to be kept).
    await stub.UpdateWebhook(
        webhooks_pb2.UpdateWebhookRequest(
            webhook=webhooks_pb2.Webhook(id=without.id, description="mTLS"),
            update_mask=FieldMask(paths=["description"]),
        )
    )
    ping = await stub.TestWebhook(webhooks_pb2.TestWebhookRequest(id=without.id))
    assert ping.status_code == 200, ping.error

    # The key never comes back, in any answer.
    key_body = key_pem.split("-----")[2].strip().splitlines()[0]
    listed = (await stub.ListWebhooks(webhooks_pb2.ListWebhooksRequest())).webhooks
    answers = [
        *listed,
        *[await stub.GetWebhook(webhooks_pb2.GetWebhookRequest(id=w.id)) for w in listed],
    ]
    assert len(answers) == 4
    for answer in answers:
        assert not answer.client_key_pem
        assert key_body.encode() not in answer.SerializeToString()
    assert {w.id: w.client_cert_pem for w in listed} == {
        with_cert.id: cert_pem,
        without.id: cert_pem,
    }


@pytest.mark.parametrize(
    ("cert", "key", "named"),
    [
        ("mine", "other", "client_key_pem: does not match the certificate in client_cert_pem"),
        ("mine", "", "client_key_pem: required with client_cert_pem"),
        ("", "mine", "client_cert_pem: required with client_key_pem"),
        ("garbage", "mine", "client_cert_pem: no PEM certificate"),
        ("mine", "garbage", "client_key_pem: not an unencrypted PEM private key"),
    ],
)
async def test_a_client_certificate_and_key_that_are_not_a_pair_are_refused(
    stub: Stub, tmp_path: Path, cert: str, key: str, named: str
) -> None:
    clients = make_certs(tmp_path / "clients")
    mine, other = client_pair(clients, "mine"), client_pair(clients, "other")
    pems = {"mine": mine, "other": other, "garbage": ("not a pem", "not a pem"), "": ("", "")}
    cert_pem, key_pem = pems[cert][0], pems[key][1]
    url = "https://127.0.0.1:9/hook"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await add_webhook(stub, url, client_cert_pem=cert_pem, client_key_pem=key_pem)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in (refused.value.details() or "")
    assert not (await stub.ListWebhooks(webhooks_pb2.ListWebhooksRequest())).webhooks

    # The same pair on an update is refused too, and the webhook keeps what it had.
    wh = await add_webhook(stub, url, client_cert_pem=mine[0], client_key_pem=mine[1])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpdateWebhook(
            webhooks_pb2.UpdateWebhookRequest(
                webhook=webhooks_pb2.Webhook(
                    id=wh.id, client_cert_pem=cert_pem, client_key_pem=key_pem
                ),
                update_mask=FieldMask(paths=["client_cert_pem", "client_key_pem"]),
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in (refused.value.details() or "")
    kept = await stub.GetWebhook(webhooks_pb2.GetWebhookRequest(id=wh.id))
    assert kept.client_cert_pem == mine[0]


async def test_ctl_names_a_client_certificate_and_can_remove_it(
    notifier: NotifierProcess, receiver_factory: ReceiverFactory, tmp_path: Path
) -> None:
    context, ca_pem, clients = mtls_receiver_context(tmp_path / "tls")
    receiver = await receiver_factory(tls=context)
    (tmp_path / "ca.pem").write_text(ca_pem)
    cert, key = clients.client("notifier-ctl")
    created = await ctl_json(
        notifier,
        "webhooks",
        "add",
        receiver.url,
        "--ca",
        str(tmp_path / "ca.pem"),
        "--client-cert",
        str(cert),
        "--client-key",
        str(key),
    )
    assert created["client_cert_pem"] == cert.read_text()
    assert created.get("client_key_pem", "") == ""
    assert "PRIVATE KEY" not in json.dumps(created)
    code, out, _ = await ctl(notifier, "webhooks", "test", created["id"])
    assert code == 0 and "200" in out, out
    assert receiver.requests[-1].client_name == "notifier-ctl"

    code, out, _ = await ctl(notifier, "webhooks", "get", created["id"])
    assert code == 0 and "CN=notifier-ctl" in out, out
    assert "PRIVATE KEY" not in out

    code, _, err = await ctl(notifier, "webhooks", "add", receiver.url, "--client-key", "/none")
    assert code != 0 and "--client-key /none" in err

    cleared = await ctl_json(notifier, "webhooks", "update", created["id"], "--client-cert", "")
    assert cleared.get("client_cert_pem", "") == ""
    code, out, _ = await ctl(notifier, "webhooks", "test", created["id"])
    assert code != 0 and "client certificate" in out, out
    code, out, _ = await ctl(notifier, "webhooks", "get", created["id"])
    assert "Client certificate" in out and "CN=notifier-ctl" not in out, out
