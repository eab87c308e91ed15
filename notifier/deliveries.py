"""Delivery records, durable in a NATS KV bucket: one per event and webhook, key
`<webhook id>.<delivery id>`, holding the body sent and every attempt. The bucket's age limit
keeps it from growing without end."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from nimbus.kvbucket import open_bucket
from nimbus.streams import DELIVERIES_BUCKET
from notifier.errors import InvalidArgument
from notifier.store import replay
from proto.nimbus.v1 import webhooks_pb2

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
EXCERPT_CHARS = 1024


def delivery_id(webhook_id: str, event_id: str) -> str:
    """Stable for one event and one webhook: the `webhook-id` receivers de-duplicate by."""
    digest = hashlib.sha256(f"{webhook_id}\n{event_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _key(webhook_id: str, delivery: str) -> str:
    return f"{webhook_id}.{delivery}"


def _order(d: webhooks_pb2.Delivery) -> tuple[int, str]:
    return (d.created_at.ToNanoseconds(), d.id)


def _cursor(d: webhooks_pb2.Delivery) -> str:
    created, ident = _order(d)
    return base64.urlsafe_b64encode(f"{created}:{ident}".encode()).decode()


def _parse_cursor(token: str) -> tuple[int, str]:
    try:
        created, _, ident = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        return int(created), ident
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token: not a token this server gave") from None


def summary(d: webhooks_pb2.Delivery) -> webhooks_pb2.Delivery:
    """A record for list answers: no body, only the last attempt."""
    short = webhooks_pb2.Delivery()
    short.CopyFrom(d)
    short.ClearField("body")
    if len(d.attempts) > 1:
        del short.attempts[:-1]
    return short


class DeliveryStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, ttl: float, replicas: int = 1) -> DeliveryStore:
        kv = await open_bucket(js, DELIVERIES_BUCKET, replicas=replicas, history=1, ttl=ttl)
        return cls(kv)

    async def put(self, delivery: webhooks_pb2.Delivery) -> None:
        await self._kv.put(_key(delivery.webhook_id, delivery.id), delivery.SerializeToString())

    async def get_for(self, webhook_id: str, delivery: str) -> webhooks_pb2.Delivery | None:
        try:
            entry = await self._kv.get(_key(webhook_id, delivery))
        except KeyNotFoundError:
            return None
        return webhooks_pb2.Delivery.FromString(entry.value) if entry.value else None

    async def _scan(self, pattern: str) -> list[webhooks_pb2.Delivery]:
        return [webhooks_pb2.Delivery.FromString(e.value) for e in await replay(self._kv, pattern)]

    async def get(self, delivery: str) -> webhooks_pb2.Delivery | None:
        if not delivery or any(c in delivery for c in ".*> "):
            return None
        found = await self._scan(f"*.{delivery}")
        return found[0] if found else None

    async def list(
        self,
        webhook_id: str,
        statuses: Sequence[int] = (),
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[webhooks_pb2.Delivery], str]:
        """Newest first; the token continues after the last record of the previous page."""
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _parse_cursor(page_token) if page_token else None
        low = since.ToNanoseconds() if since is not None else None
        high = until.ToNanoseconds() if until is not None else None
        selected = [
            d
            for d in await self._scan(f"{webhook_id}.*")
            if (not statuses or d.status in statuses)
            and (low is None or d.created_at.ToNanoseconds() >= low)
            and (high is None or d.created_at.ToNanoseconds() < high)
            and (after is None or _order(d) < after)
        ]
        selected.sort(key=_order, reverse=True)
        page = selected[:size]
        token = _cursor(page[-1]) if len(selected) > size else ""
        return [summary(d) for d in page], token
