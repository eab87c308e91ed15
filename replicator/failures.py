"""Failure records: copies that failed for good, kept in KV with the reason until retried."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from enum import StrEnum

from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from nimbus import streams
from nimbus.kvbucket import current_entries, open_bucket


class FailureKind(StrEnum):
    """Why a change failed, so an operator knows where to look."""

    # A registry (the peer, or this site's) answered with an error that retrying will not
    # change (401, 403, 404, an unsupported delete), or content did not match its digest.
    PEER_REFUSED = "peer-refused"
    # Connection errors, timeouts, 5xx, 408 or 429 through every try (sync and retries try a
    # few times; the event stream waits as long as it takes).
    PEER_UNREACHABLE = "peer-unreachable"
    # A fault of the replicator itself; its traceback is in the log.
    INTERNAL = "internal"


@dataclass
class Failure:
    peer: str
    repository: str
    # What the event named: the tag when there was one, else the manifest digest.
    reference: str
    digest: str
    action: str
    reason: str
    kind: str = FailureKind.PEER_REFUSED.value
    attempts: int = 1
    first_failed: float = 0.0
    last_failed: float = 0.0

    @property
    def id(self) -> str:
        return failure_id(self.repository, self.reference, self.action)


def failure_id(repository: str, reference: str, action: str) -> str:
    raw = f"{repository}\n{reference}\n{action}".encode()
    return hashlib.sha256(raw).hexdigest()[:20]


class FailureStore:
    """Keys are `<peer>.<id>`, so one peer's failures list with a key filter."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        # Keys this process knows to exist, so a success clears them without a lookup each time.
        self._known: set[str] = set()

    @classmethod
    async def open(cls, js: JetStreamContext, site: str, replicas: int = 1) -> FailureStore:
        bucket = streams.site_bucket(streams.REPLICATION_FAILURES_BUCKET, site)
        store = cls(await open_bucket(js, bucket, replicas=replicas))
        store._known.update(entry.key for entry in await current_entries(store.kv))
        return store

    async def record(self, failure: Failure) -> Failure:
        key = f"{failure.peer}.{failure.id}"
        now = time.time()
        failure.first_failed = failure.last_failed = now
        try:
            entry = await self.kv.get(key)
            if entry.value:
                previous = json.loads(entry.value)
                failure.attempts = int(previous.get("attempts", 0)) + 1
                failure.first_failed = float(previous.get("first_failed", now))
        except KeyNotFoundError:
            pass
        await self.kv.put(key, json.dumps(asdict(failure)).encode())
        self._known.add(key)
        return failure

    async def clear(self, peer: str, repository: str, reference: str, action: str) -> None:
        key = f"{peer}.{failure_id(repository, reference, action)}"
        if key in self._known:
            self._known.discard(key)
            await self.kv.delete(key)

    async def remove(self, peer: str, id_: str) -> None:
        self._known.discard(f"{peer}.{id_}")
        await self.kv.delete(f"{peer}.{id_}")

    async def get(self, peer: str, id_: str) -> Failure | None:
        try:
            entry = await self.kv.get(f"{peer}.{id_}")
        except KeyNotFoundError:
            return None
        return Failure(**json.loads(entry.value)) if entry.value else None

    async def list(self, peer: str = "") -> list[Failure]:
        # Not `kv.keys()`: its watch can report the end before every key has arrived.
        entries = await current_entries(self.kv, f"{peer}.>" if peer else ">")
        found = [Failure(**json.loads(e.value)) for e in entries if e.value]
        return sorted(found, key=lambda f: f.last_failed)

    async def drop_peer(self, peer: str) -> None:
        for failure in await self.list(peer):
            await self.remove(peer, failure.id)
