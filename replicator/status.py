"""Per-peer counters: each replica keeps its own and publishes them to KV; readers add them up."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass

from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from nimbus import streams
from nimbus.kvbucket import open_bucket

log = logging.getLogger("nimbus.replicator.status")

# Counters of replicas gone for this long fall out of the totals.
STATUS_TTL_SECONDS = 7 * 24 * 3600.0


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

    def merge(self, other: PeerCounters) -> None:
        self.images_copied += other.images_copied
        self.bytes_copied += other.bytes_copied
        self.deletes += other.deletes
        self.in_flight += other.in_flight
        if other.last_success > self.last_success:
            self.last_success, self.last_success_what = other.last_success, other.last_success_what
        if other.last_error > self.last_error:
            self.last_error, self.last_error_reason = other.last_error, other.last_error_reason


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

    def success(self, peer: str, what: str, images: int = 0, bytes_: int = 0) -> None:
        c = self.counters(peer)
        c.images_copied += images
        c.bytes_copied += bytes_
        c.last_success, c.last_success_what = time.time(), what
        self._dirty.add(peer)

    def deleted(self, peer: str, what: str) -> None:
        c = self.counters(peer)
        c.deletes += 1
        c.last_success, c.last_success_what = time.time(), what
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
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            keys = []
        for key in keys:
            name, _, replica = key.partition(".")
            if name != peer or replica == self.replica:
                continue
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                continue
            if entry.value:
                total.merge(PeerCounters(**json.loads(entry.value)))
        total.merge(self.counters(peer))
        return total

    async def drop_peer(self, peer: str) -> None:
        self._counters.pop(peer, None)
        self._dirty.discard(peer)
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return
        for key in keys:
            if key.partition(".")[0] == peer:
                await self.kv.delete(key)
