"""Delivery records, durable in a NATS KV bucket: one per event and webhook, key
`<webhook id>.<delivery id>`, holding the body sent and every attempt. The bucket's age limit
keeps it from growing without end.

Beside each record, a claim (key `claim.<webhook id>.<delivery id>`) names the replica sending
it and how long its lease lasts. The delivery engine writes both revision-checked, so of two
replicas racing for a delivery exactly one wins, and one that lost its claim cannot overwrite
what the new owner recorded."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
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


def _claim_key(webhook_id: str, delivery: str) -> str:
    # Three tokens: the two-token patterns that list records never match a claim.
    return f"claim.{webhook_id}.{delivery}"


class Conflict(Exception):
    """A revision-checked write lost: the key changed since it was read."""


@dataclass(slots=True)
class Claim:
    """This replica's hold on one delivery: no other replica sends it while the lease is renewed."""

    key: str
    value: bytes
    lease: float
    revision: int
    # Monotonic time the write of `revision` was sent. A rival starts counting the lease only
    # when it reads that revision, which is later, whatever the clocks of the two machines say.
    renewed_at: float
    # The claim key did not exist: no replica ever held this delivery, so it has no record.
    fresh: bool
    # Another replica took the delivery over.
    lost: bool = False

    def live(self) -> bool:
        """Safe to start an attempt: still held, and renewed well within the lease."""
        return not self.lost and time.monotonic() < self.renewed_at + self.lease / 2


@dataclass(frozen=True, slots=True)
class Rival:
    """Another replica's claim, as read at `revision`."""

    key: str
    owner: str
    lease: float
    revision: int


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

    async def read(
        self, webhook_id: str, delivery: str
    ) -> tuple[webhooks_pb2.Delivery | None, int]:
        """The record and its revision, for a revision-checked `write`; (None, 0) when none."""
        try:
            entry = await self._kv.get(_key(webhook_id, delivery))
        except KeyNotFoundError as gone:
            # A deleted record leaves a marker: writing over it needs the marker's revision.
            return None, gone.entry.revision if gone.entry is not None else 0
        record = webhooks_pb2.Delivery.FromString(entry.value) if entry.value else None
        return record, entry.revision or 0

    async def write(self, delivery: webhooks_pb2.Delivery, revision: int) -> int:
        """Store the record if it is still at `revision` (0: not stored yet); the new revision.

        Raises Conflict when another writer came first.
        """
        key = _key(delivery.webhook_id, delivery.id)
        try:
            return await self._kv.update(key, delivery.SerializeToString(), last=revision)
        except KeyWrongLastSequenceError:
            raise Conflict(key) from None

    # -- claims -------------------------------------------------------------------------------

    async def claim(
        self, webhook_id: str, delivery: str, owner: str, lease: float
    ) -> Claim | Rival:
        """Hold the delivery for `owner`, or say which other owner holds it.

        A claim left by `owner` itself is renewed and returned; a released or expired one is
        taken. A rival's claim is taken only by `take_over`, once its lease has lapsed.
        """
        key = _claim_key(webhook_id, delivery)
        value = json.dumps({"owner": owner, "lease": lease}).encode()
        last = 0
        fresh = True
        # Each round lost means another writer moved the key; a few rounds settle it.
        for _ in range(4):
            sent = time.monotonic()
            try:
                revision = await self._kv.update(key, value, last=last)
                return Claim(key, value, lease, revision, sent, fresh)
            except KeyWrongLastSequenceError:
                fresh = False
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError as gone:
                # Released (a delete marker) or expired: free for the first writer.
                last = gone.entry.revision if gone.entry is not None else 0
                continue
            rival = _rival(key, entry.value, entry.revision or 0, lease)
            if rival.owner != owner:
                return rival
            last = entry.revision or 0
        return Rival(key, "", lease, 0)  # still moving: look again later

    async def take_over(self, rival: Rival, owner: str, lease: float) -> Claim | None:
        """The rival's claim for `owner`, unless it changed since it was read."""
        value = json.dumps({"owner": owner, "lease": lease}).encode()
        sent = time.monotonic()
        try:
            revision = await self._kv.update(rival.key, value, last=rival.revision)
        except KeyWrongLastSequenceError:
            return None
        return Claim(rival.key, value, lease, revision, sent, fresh=False)

    async def renew(self, claim: Claim) -> None:
        """Extend the lease; marks the claim lost when another replica took it over."""
        sent = time.monotonic()
        try:
            claim.revision = await self._kv.update(claim.key, claim.value, last=claim.revision)
        except KeyWrongLastSequenceError:
            claim.lost = True
            return
        claim.renewed_at = sent

    async def release(self, claim: Claim) -> None:
        """Give the claim up, so another replica may take the delivery without waiting."""
        with contextlib.suppress(Exception):
            await self._kv.delete(claim.key, last=claim.revision)

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


def _rival(key: str, value: bytes | None, revision: int, lease: float) -> Rival:
    try:
        held = json.loads(value or b"{}")
        return Rival(key, str(held["owner"]), float(held["lease"]), revision)
    except (ValueError, KeyError, TypeError):
        return Rival(key, "?", lease, revision)  # unreadable: its writer is someone else
