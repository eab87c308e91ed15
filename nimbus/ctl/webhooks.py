"""`nimbus ctl webhooks ...`: the notifier's webhooks and their deliveries (nimbus.v1.Webhooks)."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from nimbus.ctl.command import Commands, Ctl, CtlError, add_command, add_noun
from nimbus.ctl.output import Column
from nimbus.tls.client import certificate_subject
from proto.nimbus.v1 import webhooks_pb2 as pb
from proto.nimbus.v1 import webhooks_pb2_grpc as pb_grpc

SERVICE = "notifier"

FORMATS = {
    "v1": pb.BODY_FORMAT_DISTRIBUTION_V1,
    "v2": pb.BODY_FORMAT_DISTRIBUTION_V2,
    "cloudevents": pb.BODY_FORMAT_CLOUDEVENTS,
}
FORMAT_NAMES = {value: name for name, value in FORMATS.items()}
STATUSES = {
    "retrying": pb.DELIVERY_STATUS_RETRYING,
    "succeeded": pb.DELIVERY_STATUS_SUCCEEDED,
    "dead": pb.DELIVERY_STATUS_DEAD,
}
STATUS_NAMES = {value: name for name, value in STATUSES.items()}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _stub(ctl: Ctl) -> Any:
    return pb_grpc.WebhooksStub(ctl.channel(SERVICE))


def _when(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return datetime.fromtimestamp(stamp.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _moment(text: str) -> Timestamp:
    """An ISO 8601 time, or an age such as 30m, 2h or 7d (that long ago)."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        delta = timedelta(**{_UNITS[relative.group(2)]: float(relative.group(1))})
        moment = datetime.now(UTC) - delta
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise CtlError(
                f"{text!r}: expected an ISO 8601 time or an age like 30m, 2h, 7d"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _headers(pairs: list[str] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise CtlError(f"--header {pair!r}: expected NAME=VALUE")
        headers[name.strip()] = value
    return headers


def _filter_text(w: pb.Webhook) -> str:
    f = w.filter
    parts = [
        f"{label}={','.join(values)}"
        for label, values in (
            ("action", f.actions),
            ("repo", f.repositories),
            ("tag", f.tags),
            ("type", f.media_types),
        )
        if values
    ]
    return " ".join(parts) or "all events"


WEBHOOK_COLUMNS = [
    Column("ID", lambda w: w.id),
    Column("URL", lambda w: w.url),
    Column("ENABLED", lambda w: "yes" if w.enabled else "no"),
    Column("FORMAT", lambda w: FORMAT_NAMES.get(w.body_format, "v1")),
    Column("FILTER", _filter_text),
]

WEBHOOK_FIELDS = [
    *WEBHOOK_COLUMNS,
    Column("Description", lambda w: w.description),
    Column("Secrets", lambda w: " ".join(w.secrets)),
    Column("Headers", lambda w: ", ".join(f"{k}={v}" for k, v in sorted(w.headers.items()))),
    Column("Private CA", lambda w: "yes" if w.ca_pem else "no (system CAs)"),
    Column("Client certificate", lambda w: _client_cert_text(w.client_cert_pem)),
    Column("Created (UTC)", lambda w: _when(w.created_at)),
    Column("Updated (UTC)", lambda w: _when(w.updated_at)),
]


def _client_cert_text(cert_pem: str) -> str:
    """The subject of a client certificate (its key is set with it, never shown); "none"."""
    if not cert_pem:
        return "none"
    return certificate_subject(cert_pem) or "set (unreadable)"


def _last_attempt(d: pb.Delivery) -> str:
    if not d.attempts:
        return "-"
    a = d.attempts[-1]
    return str(a.status_code) if a.status_code else a.error or "-"


DELIVERY_COLUMNS = [
    Column("ID", lambda d: d.id),
    Column("STATUS", lambda d: STATUS_NAMES.get(d.status, "-")),
    Column("ACTION", lambda d: d.action),
    Column("TARGET", lambda d: f"{d.repository}:{d.tag}" if d.tag else d.repository),
    Column("ATTEMPTS", lambda d: len(d.attempts) if d.attempts else 0),
    Column("LAST", _last_attempt),
    Column("CREATED (UTC)", lambda d: _when(d.created_at)),
]

ATTEMPT_COLUMNS = [
    Column("#", lambda a: a.number),
    Column("STARTED (UTC)", lambda a: _when(a.started_at)),
    Column("STATUS", lambda a: a.status_code or "-"),
    Column("LATENCY", lambda a: f"{a.latency_ms:.1f} ms"),
    Column("ERROR", lambda a: a.error),
    Column("BY", lambda a: a.instance),
]


def _apply_filter_flags(target: pb.EventFilter, args: argparse.Namespace) -> bool:
    """Set the filter fields given on the command line; True when any was."""
    changed = False
    for flag, field in (
        ("action", "actions"),
        ("repo", "repositories"),
        ("tag", "tags"),
        ("media_type", "media_types"),
    ):
        values = getattr(args, flag)
        if values is not None:
            target.ClearField(field)
            getattr(target, field).extend(v for v in values if v)
            changed = True
    return changed


def _read_pem(path: str | None, flag: str = "--ca") -> str:
    """A PEM file's text; "" for no file (--ca "" goes back to the system's CAs, --client-cert ""
    removes the client certificate and its key)."""
    if not path:
        return ""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CtlError(f"{flag} {path}: {exc.strerror}") from None


async def add(ctl: Ctl) -> None:
    a = ctl.args
    webhook = pb.Webhook(
        url=a.url,
        secrets=a.secret or [],
        body_format=FORMATS[a.format],
        headers=_headers(a.header),
        enabled=not a.disabled,
        description=a.description or "",
        ca_pem=_read_pem(a.ca),
        client_cert_pem=_read_pem(a.client_cert, "--client-cert"),
        client_key_pem=_read_pem(a.client_key, "--client-key"),
    )
    _apply_filter_flags(webhook.filter, a)
    created = await _stub(ctl).CreateWebhook(
        pb.CreateWebhookRequest(webhook=webhook), timeout=ctl.timeout
    )
    ctl.out.record(created, WEBHOOK_FIELDS)


async def list_webhooks(ctl: Ctl) -> None:
    reply = await _stub(ctl).ListWebhooks(pb.ListWebhooksRequest(), timeout=ctl.timeout)
    ctl.out.table(list(reply.webhooks), WEBHOOK_COLUMNS, empty="no webhooks")


async def get(ctl: Ctl) -> None:
    webhook = await _stub(ctl).GetWebhook(pb.GetWebhookRequest(id=ctl.args.id), timeout=ctl.timeout)
    ctl.out.record(webhook, WEBHOOK_FIELDS)


async def update(ctl: Ctl) -> None:
    a = ctl.args
    stub = _stub(ctl)
    current = await stub.GetWebhook(pb.GetWebhookRequest(id=a.id), timeout=ctl.timeout)
    change = pb.Webhook(id=a.id)
    paths: list[str] = []
    if a.url is not None:
        change.url = a.url
        paths.append("url")
    if a.secret is not None or a.add_secret or a.remove_secret:
        secrets = list(a.secret) if a.secret is not None else list(current.secrets)
        secrets += [s for s in a.add_secret or [] if s not in secrets]
        secrets = [s for s in secrets if s not in (a.remove_secret or [])]
        change.secrets.extend(secrets)
        paths.append("secrets")
    change.filter.CopyFrom(current.filter)
    if _apply_filter_flags(change.filter, a):
        paths.append("filter")
    if a.format is not None:
        change.body_format = FORMATS[a.format]
        paths.append("body_format")
    if a.header is not None:
        change.headers.update(_headers(a.header))
        paths.append("headers")
    if a.enabled is not None:
        change.enabled = a.enabled
        paths.append("enabled")
    if a.description is not None:
        change.description = a.description
        paths.append("description")
    if a.ca is not None:
        change.ca_pem = _read_pem(a.ca)
        paths.append("ca_pem")
    if a.client_cert is not None:
        change.client_cert_pem = _read_pem(a.client_cert, "--client-cert")
        paths.append("client_cert_pem")
    if a.client_key is not None:
        change.client_key_pem = _read_pem(a.client_key, "--client-key")
        paths.append("client_key_pem")
    if not paths:
        raise CtlError("nothing to change: give at least one option (see --help)")
    updated = await stub.UpdateWebhook(
        pb.UpdateWebhookRequest(webhook=change, update_mask=FieldMask(paths=paths)),
        timeout=ctl.timeout,
    )
    ctl.out.record(updated, WEBHOOK_FIELDS)


async def rm(ctl: Ctl) -> None:
    await _stub(ctl).DeleteWebhook(pb.DeleteWebhookRequest(id=ctl.args.id), timeout=ctl.timeout)
    ctl.out.done(f"deleted webhook {ctl.args.id}", {"id": ctl.args.id, "deleted": True})


async def test(ctl: Ctl) -> int:
    attempt = await _stub(ctl).TestWebhook(
        pb.TestWebhookRequest(id=ctl.args.id), timeout=ctl.timeout
    )
    ctl.out.record(
        attempt,
        [
            Column("Status", lambda a: a.status_code or "-"),
            Column("Latency", lambda a: f"{a.latency_ms:.1f} ms"),
            Column("Error", lambda a: a.error),
            Column("Response", lambda a: a.response_body_excerpt),
        ],
    )
    return 0 if 200 <= attempt.status_code < 300 else 1


async def deliveries(ctl: Ctl) -> None:
    a = ctl.args
    request = pb.ListDeliveriesRequest(
        webhook_id=a.id,
        statuses=[STATUSES[s] for s in a.status or []],
        page_size=a.page_size,
    )
    if a.since:
        request.since.CopyFrom(_moment(a.since))
    if a.until:
        request.until.CopyFrom(_moment(a.until))
    items = await ctl.pages(_stub(ctl).ListDeliveries, request, "deliveries", a.limit)
    ctl.out.table(items, DELIVERY_COLUMNS, empty="no deliveries")


async def delivery(ctl: Ctl) -> None:
    found = await _stub(ctl).GetDelivery(pb.GetDeliveryRequest(id=ctl.args.id), timeout=ctl.timeout)
    _show_delivery(ctl, found)


async def redeliver(ctl: Ctl) -> int:
    found = await _stub(ctl).Redeliver(pb.RedeliverRequest(id=ctl.args.id), timeout=ctl.timeout)
    _show_delivery(ctl, found)
    return 0 if found.status == pb.DELIVERY_STATUS_SUCCEEDED else 1


def _show_delivery(ctl: Ctl, found: pb.Delivery) -> None:
    if ctl.out.json_mode:
        ctl.out.record(found, [])
        return
    ctl.out.record(
        found,
        [
            *DELIVERY_COLUMNS[:4],
            Column("WEBHOOK", lambda d: d.webhook_id),
            Column("EVENT", lambda d: d.event_id),
            Column("URL", lambda d: d.url),
            Column("DIGEST", lambda d: d.digest),
            Column("BODY", lambda d: d.body_excerpt),
        ],
    )
    ctl.out.table(list(found.attempts), ATTEMPT_COLUMNS, empty="no attempts yet")


def _filter_flags(p: argparse.ArgumentParser, default: Any = None) -> None:
    p.add_argument("--action", action="append", default=default, help="push, pull, delete, mount")
    p.add_argument("--repo", action="append", default=default, help="repository glob (team/*)")
    p.add_argument("--tag", action="append", default=default, help="tag glob (v*)")
    p.add_argument("--media-type", action="append", default=default, help="media type glob")


def register(commands: Commands) -> None:
    webhooks = add_noun(commands, "webhooks", "webhooks of the notifier")

    p = add_command(webhooks, "add", add, SERVICE, "create a webhook (prints its secret)")
    p.add_argument("url")
    p.add_argument("--secret", action="append", help="whsec_... (generated when not given)")
    p.add_argument("--format", choices=sorted(FORMATS), default="v1", help="body format (v1)")
    p.add_argument("--header", action="append", help="NAME=VALUE added to every request")
    p.add_argument("--disabled", action="store_true", help="create it switched off")
    p.add_argument("--description")
    p.add_argument("--ca", help="PEM CA bundle verifying an https receiver (private CA)")
    p.add_argument("--client-cert", help="PEM client certificate for a receiver asking for one")
    p.add_argument("--client-key", help="PEM private key of --client-cert")
    _filter_flags(p)

    add_command(webhooks, "list", list_webhooks, SERVICE, "list webhooks")

    p = add_command(webhooks, "get", get, SERVICE, "show a webhook")
    p.add_argument("id")

    p = add_command(webhooks, "update", update, SERVICE, "change a webhook")
    p.add_argument("id")
    p.add_argument("--url")
    p.add_argument("--secret", action="append", help="replace the secrets")
    p.add_argument("--add-secret", action="append", help="add a secret (rotation)")
    p.add_argument("--remove-secret", action="append", help="remove a secret")
    p.add_argument("--format", choices=sorted(FORMATS))
    p.add_argument("--header", action="append", help="NAME=VALUE; replaces the headers")
    switch = p.add_mutually_exclusive_group()
    switch.add_argument("--enable", dest="enabled", action="store_true", default=None)
    switch.add_argument("--disable", dest="enabled", action="store_false")
    p.add_argument("--description")
    p.add_argument("--ca", help='PEM CA bundle for an https receiver ("" for the system CAs)')
    p.add_argument("--client-cert", help='PEM client certificate (mTLS); "" removes it and its key')
    p.add_argument("--client-key", help="PEM private key of the client certificate")
    _filter_flags(p)

    p = add_command(webhooks, "rm", rm, SERVICE, "delete a webhook")
    p.add_argument("id")

    p = add_command(webhooks, "test", test, SERVICE, "send a signed ping and show the answer")
    p.add_argument("id")

    p = add_command(webhooks, "deliveries", deliveries, SERVICE, "list a webhook's deliveries")
    p.add_argument("id", help="webhook id")
    p.add_argument("--status", action="append", choices=sorted(STATUSES))
    p.add_argument("--since", help="ISO 8601 time or an age (30m, 2h, 7d)")
    p.add_argument("--until", help="ISO 8601 time or an age (30m, 2h, 7d)")
    p.add_argument("--limit", type=int, default=0, help="at most this many")
    p.add_argument("--page-size", type=int, default=100)

    p = add_command(webhooks, "delivery", delivery, SERVICE, "show a delivery and its attempts")
    p.add_argument("id", help="delivery id (the webhook-id header)")

    p = add_command(webhooks, "redeliver", redeliver, SERVICE, "send a delivery again now")
    p.add_argument("id", help="delivery id")
