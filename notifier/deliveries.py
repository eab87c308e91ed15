"""Delivery records, durable in a NATS KV bucket: one per event and webhook, key
`<webhook id>.<delivery id>`, holding the body sent and every attempt. The bucket's age limit
keeps it from growing without end.

The record is also the delivery's claim. A replica about to send a delivery creates its record
(revision-checked: of two replicas racing, exactly one wins), naming itself and its lease in
the entry's `Nimbus-Claim` header; every later write of the record by the owner is
revision-checked too and renews the lease, so one replica that lost the claim cannot overwrite
what the new owner recorded. A final record (succeeded or dead) carries no claim, nor does a
released one. So a delivery costs two KV writes: the record before the first attempt, and the
attempt's answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from nimbus.kvbucket import open_bucket
from nimbus.streams import DELIVERIES_BUCKET
from notifier.errors import InvalidArgument
from notifier.store import replay
from proto.nimbus.v1 import webhooks_pb2

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
EXCERPT_CHARS = 1024
# The owner and lease of a record's claim: "<owner> <lease seconds>".
CLAIM_HEADER = "Nimbus-Claim"
FINAL = (webhooks_pb2.DELIVERY_STATUS_SUCCEEDED, webhooks_pb2.DELIVERY_STATUS_DEAD)
# JetStream's answers to a publish whose expected last subject sequence is not the current one.
_WRONG_LAST = (10071, 10164)
_EXPECTED_LAST = api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value


def delivery_id(webhook_id: str, event_id: str) -> str:
    """Stable for one event and one webhook: the `webhook-id` receivers de-duplicate by."""
    digest = hashlib.sha256(f"{webhook_id}\n{event_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _key(webhook_id: str, delivery: str) -> str:
    return f"{webhook_id}.{delivery}"


class Conflict(Exception):
    """A revision-checked write lost: the key changed since it was read."""


@dataclass(frozen=True, slots=True)
class Holder:
    """A replica as it names itself in claims; the header is made once, not per write."""

    owner: str
    lease: float
    header: str = ""

    @classmethod
    def of(cls, owner: str, lease: float) -> Holder:
        return cls(owner, lease, f"{owner} {lease:g}")


def _holder(header: str | None, lease: float) -> Holder | None:
    """The claim a record's header names; None when unclaimed. Unreadable: someone else's."""
    if not header:
        return None
    owner, _, seconds = header.rpartition(" ")
    try:
        return Holder(owner, float(seconds), header)
    except ValueError:
        return Holder("?", lease, header)


@dataclass(slots=True)
class Stored:
    """A record as read: its revision (0 when it never existed, else the latest, a deletion
    marker's included) and the claim its entry carries."""

    record: webhooks_pb2.Delivery | None
    revision: int
    value: bytes = b""
    holder: Holder | None = None


@dataclass(slots=True, eq=False)
class Claim:
    """This replica's hold on one delivery: the record being worked on, and the revision and
    bytes of its last write. No other replica sends it while the lease is renewed."""

    key: str
    holder: Holder
    record: webhooks_pb2.Delivery
    revision: int
    value: bytes
    # Monotonic time the write of `revision` was sent. A rival starts counting the lease only
    # when it reads that revision, which is later, whatever the clocks of the two machines say.
    renewed_at: float
    # Another replica took the delivery over, or a write lost to another writer.
    lost: bool = False
    # One write at a time: a renewal racing the owner's own save would fail the other.
    writing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def live(self) -> bool:
        """Safe to start an attempt: still held, and renewed well within the lease."""
        return not self.lost and time.monotonic() < self.renewed_at + self.holder.lease / 2

    def restore(self) -> None:
        """Back to the record as last written (an attempt since may not be recorded)."""
        self.record = webhooks_pb2.Delivery.FromString(self.value)


@dataclass(frozen=True, slots=True)
class Rival:
    """Another replica's claim, as read at `revision` (0: the record kept moving)."""

    key: str
    owner: str
    lease: float
    revision: int
    value: bytes = b""


@dataclass(frozen=True, slots=True)
class Finished:
    """The record is final: nothing more to send."""

    record: webhooks_pb2.Delivery


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
        self._js: JetStreamContext = kv._js
        self._prefix: str = kv._pre
        self._stream: str = kv._stream
        self._direct: bool = bool(kv._direct)

    @classmethod
    async def open(cls, js: JetStreamContext, ttl: float, replicas: int = 1) -> DeliveryStore:
        kv = await open_bucket(js, DELIVERIES_BUCKET, replicas=replicas, history=1, ttl=ttl)
        return cls(kv)

    # -- the entries, with their claim header -------------------------------------------------

    async def _write(self, key: str, value: bytes, last: int, claim: str | None) -> int:
        """Publish `value` as `key` if the key is still at revision `last` (0: never written);
        the new revision. Raises Conflict when another writer came first."""
        headers: dict[str, str] = {_EXPECTED_LAST: str(last)}
        if claim:
            headers[CLAIM_HEADER] = claim
        try:
            ack = await self._js.publish(self._prefix + key, value, headers=headers)
        except APIError as error:
            if error.err_code in _WRONG_LAST:
                raise Conflict(key) from None
            raise
        return int(ack.seq)

    async def _read(self, key: str, lease: float) -> Stored:
        try:
            msg = await self._js._jsm.get_msg(
                self._stream, subject=self._prefix + key, direct=self._direct
            )
        except NotFoundError:
            return Stored(None, 0)
        headers = msg.headers or {}
        revision = int(msg.seq or 0)
        if headers.get(KV_OP) in (KV_DEL, KV_PURGE) or not msg.data:
            # A deleted record leaves a marker: writing over it needs the marker's revision.
            return Stored(None, revision)
        record = webhooks_pb2.Delivery.FromString(msg.data)
        return Stored(record, revision, msg.data, _holder(headers.get(CLAIM_HEADER), lease))

    async def read(self, webhook_id: str, delivery: str) -> Stored:
        """The record, its revision and its claim, for a revision-checked `write`."""
        return await self._read(_key(webhook_id, delivery), 0.0)

    async def write(
        self, delivery: webhooks_pb2.Delivery, revision: int, holder: Holder | None = None
    ) -> int:
        """Store the record if it is still at `revision` (0: not stored yet), keeping the claim
        of `holder` on it (none: unclaimed); the new revision.

        Raises Conflict when another writer came first.
        """
        key = _key(delivery.webhook_id, delivery.id)
        header = holder.header if holder is not None else None
        return await self._write(key, delivery.SerializeToString(), revision, header)

    async def put(self, delivery: webhooks_pb2.Delivery) -> None:
        await self._kv.put(_key(delivery.webhook_id, delivery.id), delivery.SerializeToString())

    # -- claims -------------------------------------------------------------------------------

    async def claim(
        self,
        webhook_id: str,
        delivery: str,
        holder: Holder,
        fresh: Callable[[], webhooks_pb2.Delivery],
    ) -> Claim | Rival | Finished:
        """Hold the delivery for `holder`, creating its record with `fresh()` when it has none;
        or say which other replica holds it, or that it is final.

        A record claimed by `holder` itself, or by nobody (released), is taken as it stands. A
        rival's claim is taken only by `take_over`, once its lease has lapsed.
        """
        key = _key(webhook_id, delivery)
        record = fresh()
        value = record.SerializeToString()
        last = 0
        # Each round lost means another writer moved the key; a few rounds settle it.
        for _ in range(4):
            sent = time.monotonic()
            try:
                revision = await self._write(key, value, last, holder.header)
                return Claim(key, holder, record, revision, value, sent)
            except Conflict:
                pass
            stored = await self._read(key, holder.lease)
            if stored.record is None:
                # Deleted or expired: free for the first writer, as a new record.
                last = stored.revision
                continue
            if stored.record.status in FINAL:
                return Finished(stored.record)
            if stored.holder is not None and stored.holder.owner != holder.owner:
                h = stored.holder
                return Rival(key, h.owner, h.lease, stored.revision, stored.value)
            record, value, last = stored.record, stored.value, stored.revision
        return Rival(key, "", holder.lease, 0)  # still moving: look again later

    async def inspect(self, rival: Rival, holder: Holder) -> Rival | Finished | None:
        """The delivery as it is now: still (or newly) a rival's, final, or free (None: its
        record is gone or unclaimed, so `claim` takes it)."""
        stored = await self._read(rival.key, holder.lease)
        if stored.record is None:
            return None
        if stored.record.status in FINAL:
            return Finished(stored.record)
        h = stored.holder
        if h is None or h.owner == holder.owner:
            return None
        return Rival(rival.key, h.owner, h.lease, stored.revision, stored.value)

    async def take_over(self, rival: Rival, holder: Holder) -> Claim | None:
        """The rival's claim for `holder`, unless the record changed since it was read."""
        sent = time.monotonic()
        try:
            revision = await self._write(rival.key, rival.value, rival.revision, holder.header)
        except Conflict:
            return None
        record = webhooks_pb2.Delivery.FromString(rival.value)
        return Claim(rival.key, holder, record, revision, rival.value, sent)

    async def save(self, claim: Claim) -> None:
        """Write the claim's record as it is now; a final one gives the claim up with it.

        Raises Conflict (and marks the claim lost) when the record changed since the last
        write: another replica took it over, or an operator's redelivery recorded an attempt.
        """
        record = claim.record
        value = record.SerializeToString()
        header = None if record.status in FINAL else claim.holder.header
        async with claim.writing:
            sent = time.monotonic()
            try:
                claim.revision = await self._write(claim.key, value, claim.revision, header)
            except Conflict:
                claim.lost = True
                raise
            claim.value, claim.renewed_at = value, sent

    async def renew(self, claim: Claim) -> None:
        """Extend the lease by writing the record again as last written; marks the claim lost
        when another writer came first. A write already under way renews it anyway."""
        if claim.writing.locked() or claim.lost:
            return
        async with claim.writing:
            sent = time.monotonic()
            try:
                claim.revision = await self._write(
                    claim.key, claim.value, claim.revision, claim.holder.header
                )
            except Conflict:
                claim.lost = True
                return
            claim.renewed_at = sent

    async def release(self, claim: Claim) -> None:
        """Give the claim up, so another replica may take the delivery without waiting."""
        if claim.lost:
            return
        with contextlib.suppress(Exception):
            async with claim.writing:
                await self._write(claim.key, claim.value, claim.revision, None)
                claim.lost = True

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
