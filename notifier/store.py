"""Webhooks in a NATS KV bucket (protobuf JSON values), shared by every notifier replica.

Each replica keeps the bucket mirrored in memory through a KV watch, so matching an event
against the webhooks costs no round trip; writes go to the bucket and come back by the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from google.protobuf.json_format import MessageToJson, Parse
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from nimbus.kvbucket import current_entries, open_bucket
from nimbus.streams import WEBHOOKS_BUCKET
from proto.nimbus.v1 import webhooks_pb2

log = logging.getLogger("nimbus.notifier.store")


def _encode(webhook: webhooks_pb2.Webhook) -> bytes:
    text: str = MessageToJson(webhook, indent=None)
    return text.encode()


def _decode(data: bytes) -> webhooks_pb2.Webhook:
    webhook = webhooks_pb2.Webhook()
    Parse(data, webhook, ignore_unknown_fields=True)
    return webhook


async def replay(kv: KeyValue, pattern: str) -> list[KeyValue.Entry]:
    """The current value of every key matching `pattern`."""
    return await current_entries(kv, pattern)


class WebhookStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._cache: dict[str, webhooks_pb2.Webhook] = {}
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> WebhookStore:
        store = cls(await open_bucket(js, WEBHOOKS_BUCKET, replicas=replicas, history=5))
        await store._start_watch()
        return store

    async def _start_watch(self) -> None:
        self._watcher = await self._kv.watchall()
        # The watch first replays the bucket and then sends None: serve only once mirrored.
        while (entry := await self._watcher.updates(timeout=30)) is not None:  # type: ignore[no-untyped-call]
            self._apply(entry)
        self._task = asyncio.create_task(self._follow(self._watcher), name="webhooks-watch")

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: KeyValue.Entry) -> None:
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self._cache.pop(entry.key, None)
            return
        try:
            self._cache[entry.key] = _decode(entry.value)
        except Exception:
            log.exception("unreadable webhook in the bucket", extra={"key": entry.key})

    async def close(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()  # type: ignore[no-untyped-call]
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def cached(self) -> list[webhooks_pb2.Webhook]:
        """Every webhook as this replica last heard of it."""
        return list(self._cache.values())

    def cached_get(self, webhook_id: str) -> webhooks_pb2.Webhook | None:
        """One webhook as this replica last heard of it."""
        return self._cache.get(webhook_id)

    async def get(self, webhook_id: str) -> webhooks_pb2.Webhook | None:
        try:
            entry = await self._kv.get(webhook_id)
        except KeyNotFoundError:
            return None
        return _decode(entry.value) if entry.value else None

    async def list(self) -> list[webhooks_pb2.Webhook]:
        found = [_decode(entry.value or b"") for entry in await replay(self._kv, ">")]
        return sorted(found, key=lambda w: (w.created_at.ToNanoseconds(), w.id))

    async def create(self, webhook: webhooks_pb2.Webhook) -> bool:
        """Store a new webhook; False when its id is taken."""
        try:
            await self._kv.create(webhook.id, _encode(webhook))
        except KeyWrongLastSequenceError:
            return False
        self._cache[webhook.id] = webhook
        return True

    async def put(self, webhook: webhooks_pb2.Webhook) -> None:
        await self._kv.put(webhook.id, _encode(webhook))
        self._cache[webhook.id] = webhook

    async def delete(self, webhook_id: str) -> None:
        await self._kv.delete(webhook_id)
        self._cache.pop(webhook_id, None)
