"""Per-peer counters: each replica keeps its own and publishes them to KV; readers add them up."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, field

from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from nimbus import streams
from nimbus.kvbucket import current_entries, open_bucket

log = logging.getLogger("nimbus.replicator.status")

# Counters of replicas gone for this long fall out of the totals.
STATUS_TTL_SECONDS = 7 * 24 * 3600.0
# The per-minute history kept beside the counters.
HISTORY_MINUTES = 60


@dataclass
class Minute:
    """What was applied in one minute; `lag_sum`/`lag_count` over changes that came from events."""

    start: int  # epoch seconds, a multiple of 60
    images: int = 0
    bytes: int = 0
    deletes: int = 0
    lag_sum: float = 0.0
    lag_count: int = 0
    lag_max: float = 0.0

    def add(self, other: Minute) -> None:
        self.images += other.images
        self.bytes += other.bytes
        self.deletes += other.deletes
        self.lag_sum += other.lag_sum
        self.lag_count += other.lag_count
        self.lag_max = max(self.lag_max, other.lag_max)

    @property
    def lag_mean(self) -> float:
        return self.lag_sum / self.lag_count if self.lag_count else 0.0


def _recent(minutes: list[Minute], now: float) -> list[Minute]:
    oldest = int(now // 60) * 60 - (HISTORY_MINUTES - 1) * 60
    return [m for m in minutes if m.start >= oldest]


@dataclass
class PeerCounters:
    images_copied: int = 0
    bytes_copied: int = 0
    deletes: int = 0
    in_flight: int = 0
    last_success: float = 0.0
    last_success_what: str = ""
    last_error: float = 0.0
    last_error_reason: str = ""
    # The last hour, oldest first; only minutes in which something was applied.
    minutes: list[Minute] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: bytes) -> PeerCounters:
        fields = json.loads(data)
        minutes = [Minute(**m) for m in fields.pop("minutes", [])]
        return cls(**fields, minutes=minutes)

    def minute(self, now: float) -> Minute:
        start = int(now // 60) * 60
        if not self.minutes or self.minutes[-1].start != start:
            self.minutes = [*_recent(self.minutes, now), Minute(start)]
        return self.minutes[-1]

    def last_hour(self, now: float | None = None) -> list[Minute]:
        return _recent(self.minutes, time.time() if now is None else now)

    def merge(self, other: PeerCounters) -> None:
        self.images_copied += other.images_copied
        self.bytes_copied += other.bytes_copied
        self.deletes += other.deletes
        self.in_flight += other.in_flight
        if other.last_success > self.last_success:
            self.last_success, self.last_success_what = other.last_success, other.last_success_what
        if other.last_error > self.last_error:
            self.last_error, self.last_error_reason = other.last_error, other.last_error_reason
        by_start = {m.start: Minute(**asdict(m)) for m in self.minutes}
        for m in other.minutes:
            by_start.setdefault(m.start, Minute(m.start)).add(m)
        self.minutes = [by_start[start] for start in sorted(by_start)]


class StatusBoard:
    """This replica's counters, flushed to `<peer>.<replica>` keys now and then."""

    def __init__(self, kv: KeyValue, replica: str) -> None:
        self.kv = kv
        self.replica = replica
        self._counters: dict[str, PeerCounters] = {}
        self._dirty: set[str] = set()

    @classmethod
    async def open(
        cls, js: JetStreamContext, site: str, replica: str, replicas: int = 1
    ) -> StatusBoard:
        bucket = streams.site_bucket(streams.REPLICATION_STATUS_BUCKET, site)
        kv = await open_bucket(js, bucket, replicas=replicas, ttl=STATUS_TTL_SECONDS)
        return cls(kv, replica)

    def counters(self, peer: str) -> PeerCounters:
        return self._counters.setdefault(peer, PeerCounters())

    def success(
        self, peer: str, what: str, images: int = 0, bytes_: int = 0, lag: float | None = None
    ) -> None:
        """A change applied; `lag` is the seconds since its event, when it came from one."""
        c = self.counters(peer)
        c.images_copied += images
        c.bytes_copied += bytes_
        c.last_success, c.last_success_what = time.time(), what
        minute = c.minute(c.last_success)
        minute.images += images
        minute.bytes += bytes_
        _lag(minute, lag)
        self._dirty.add(peer)

    def deleted(self, peer: str, what: str, lag: float | None = None) -> None:
        c = self.counters(peer)
        c.deletes += 1
        c.last_success, c.last_success_what = time.time(), what
        minute = c.minute(c.last_success)
        minute.deletes += 1
        _lag(minute, lag)
        self._dirty.add(peer)

    def error(self, peer: str, reason: str) -> None:
        c = self.counters(peer)
        c.last_error, c.last_error_reason = time.time(), reason[:500]
        self._dirty.add(peer)

    def in_flight(self, peer: str, delta: int) -> None:
        self.counters(peer).in_flight += delta
        self._dirty.add(peer)

    async def flush(self) -> None:
        for peer in list(self._dirty):
            self._dirty.discard(peer)
            data = json.dumps(asdict(self.counters(peer))).encode()
            await self.kv.put(f"{peer}.{self.replica}", data)

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception as error:  # NATS away: keep counting, flush later
                log.warning("status flush failed", extra={"error": repr(error)})

    async def totals(self, peer: str) -> PeerCounters:
        """Every replica's counters for ``peer`` added up (this one's taken live)."""
        total = PeerCounters()
        # Not `kv.keys()`: its watch can report the end before every key has arrived.
        for entry in await current_entries(self.kv, f"{peer}.>"):
            if entry.key.partition(".")[2] != self.replica and entry.value:
                total.merge(PeerCounters.from_json(entry.value))
        total.merge(self.counters(peer))
        return total

    async def drop_peer(self, peer: str) -> None:
        self._counters.pop(peer, None)
        self._dirty.discard(peer)
        for entry in await current_entries(self.kv, f"{peer}.>"):
            await self.kv.delete(entry.key)


def _lag(minute: Minute, lag: float | None) -> None:
    if lag is None:
        return
    lag = max(lag, 0.0)
    minute.lag_sum += lag
    minute.lag_count += 1
    minute.lag_max = max(minute.lag_max, lag)
