"""The rules of webhooks: what a valid webhook is, how one is created, changed and removed."""

from __future__ import annotations

import re
import ssl
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

from nimbus.tls.client import client_pair_problems
from notifier import signing
from notifier.errors import InvalidArgument, NotFound
from notifier.filters import problems
from notifier.store import WebhookStore
from proto.nimbus.v1 import webhooks_pb2

UPDATABLE = (
    "url",
    "secrets",
    "filter",
    "body_format",
    "headers",
    "enabled",
    "description",
    "ca_pem",
    "client_cert_pem",
    "client_key_pem",
)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Headers the notifier sets itself; a webhook may not replace them.
_RESERVED = {
    "content-type",
    "content-length",
    "host",
    signing.ID_HEADER,
    signing.TIMESTAMP_HEADER,
    signing.SIGNATURE_HEADER,
}


def new_webhook_id() -> str:
    return f"wh_{uuid.uuid4().hex[:16]}"


def validate(webhook: webhooks_pb2.Webhook) -> None:
    found: list[str] = []
    parts = urlsplit(webhook.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        found.append(f"url: an http:// or https:// URL with a host, got {webhook.url!r}")
    if not webhook.secrets:
        found.append("secrets: at least one")
    for secret in webhook.secrets:
        try:
            signing.secret_key(secret)
        except signing.InvalidSecret as exc:
            found.append(f"secrets: {exc}")
    found.extend(f"filter: {p}" for p in problems(webhook.filter))
    if webhook.body_format not in webhooks_pb2.BodyFormat.values():
        found.append(f"body_format: unknown value {webhook.body_format}")
    for name, value in webhook.headers.items():
        if not _TOKEN.match(name):
            found.append(f"headers: {name!r} is not a header name")
        elif name.lower() in _RESERVED:
            found.append(f"headers: {name!r} is set by the notifier")
        if "\n" in value or "\r" in value:
            found.append(f"headers: the value of {name!r} spans lines")
    if webhook.ca_pem:
        try:
            ssl.create_default_context(cadata=webhook.ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            found.append(f"ca_pem: not a PEM CA bundle ({exc})")
    found.extend(
        client_pair_problems(
            webhook.client_cert_pem, webhook.client_key_pem, "client_cert_pem", "client_key_pem"
        )
    )
    if found:
        raise InvalidArgument("; ".join(found))


def shown(webhook: webhooks_pb2.Webhook) -> webhooks_pb2.Webhook:
    """A webhook as the API answers it: without its client key (a `client_cert_pem` says that
    one is set)."""
    answer = webhooks_pb2.Webhook()
    answer.CopyFrom(webhook)
    answer.ClearField("client_key_pem")
    return answer


class WebhookService:
    """The webhooks' rules. `create`, `get`, `list` and `update` answer as the API shows a
    webhook (`shown`); `stored` is the whole webhook, for sending."""

    def __init__(self, store: WebhookStore) -> None:
        self._store = store

    async def create(self, draft: webhooks_pb2.Webhook) -> webhooks_pb2.Webhook:
        webhook = webhooks_pb2.Webhook()
        webhook.CopyFrom(draft)
        webhook.id = new_webhook_id()
        if not webhook.secrets:
            webhook.secrets.append(signing.new_secret())
        if not webhook.HasField("enabled"):
            webhook.enabled = True
        if webhook.body_format == webhooks_pb2.BODY_FORMAT_UNSPECIFIED:
            webhook.body_format = webhooks_pb2.BODY_FORMAT_DISTRIBUTION_V1
        validate(webhook)
        webhook.created_at.GetCurrentTime()
        webhook.updated_at.CopyFrom(webhook.created_at)
        if not await self._store.create(webhook):
            raise InvalidArgument(f"webhook id {webhook.id} is taken; try again")
        return shown(webhook)

    async def get(self, webhook_id: str) -> webhooks_pb2.Webhook:
        return shown(await self.stored(webhook_id))

    async def stored(self, webhook_id: str) -> webhooks_pb2.Webhook:
        if not webhook_id or any(c in webhook_id for c in ".*> "):
            raise NotFound(f"no webhook {webhook_id!r}")
        webhook = await self._store.get(webhook_id)
        if webhook is None:
            raise NotFound(f"no webhook {webhook_id!r}")
        return webhook

    async def list(self) -> list[webhooks_pb2.Webhook]:
        return [shown(w) for w in await self._store.list()]

    async def update(
        self, change: webhooks_pb2.Webhook, paths: Sequence[str]
    ) -> webhooks_pb2.Webhook:
        webhook = await self.stored(change.id)
        unknown = [p for p in paths if p not in UPDATABLE]
        if unknown:
            raise InvalidArgument(
                f"update_mask: cannot change {', '.join(unknown)} (only {', '.join(UPDATABLE)})"
            )
        for path in paths or UPDATABLE:
            if path == "enabled":
                webhook.enabled = change.enabled if change.HasField("enabled") else True
            elif path in ("secrets", "headers"):
                webhook.ClearField(path)
                if path == "secrets":
                    webhook.secrets.extend(change.secrets)
                else:
                    webhook.headers.update(change.headers)
            elif path == "filter":
                webhook.filter.CopyFrom(change.filter)
            elif path == "client_key_pem":
                # Never shown, so an update that does not name it (or, without a mask, does not
                # give a new one) keeps the key it has.
                if paths or change.client_key_pem:
                    webhook.client_key_pem = change.client_key_pem
            else:
                setattr(webhook, path, getattr(change, path))
        if not webhook.client_cert_pem and "client_key_pem" not in paths:
            webhook.client_key_pem = ""  # no certificate, no key
        if webhook.body_format == webhooks_pb2.BODY_FORMAT_UNSPECIFIED:
            webhook.body_format = webhooks_pb2.BODY_FORMAT_DISTRIBUTION_V1
        validate(webhook)
        webhook.updated_at.GetCurrentTime()
        await self._store.put(webhook)
        return shown(webhook)

    async def delete(self, webhook_id: str) -> None:
        await self.stored(webhook_id)
        await self._store.delete(webhook_id)
