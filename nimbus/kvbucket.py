"""Opening a NATS KV bucket the same way in every service: created on first use, and kept at
the replica count the service is configured with (a NATS cluster keeps that many copies)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig
from nats.js.client import KV_STREAM_TEMPLATE
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

log = logging.getLogger("nimbus.nats")

# JetStream keeps at most five copies of a stream.
MAX_REPLICAS = 5
_FETCH_BATCH = 256
_FETCH_TIMEOUT = 5.0
# Keys read one by one at once, when a consumer read missed some.
_PARALLEL_READS = 32


async def open_bucket(
    js: JetStreamContext,
    bucket: str,
    *,
    replicas: int = 1,
    history: int = 1,
    ttl: float | None = None,
) -> KeyValue:
    """The bucket, created with these settings when it does not exist yet (every replica of a
    service may race to create it: the same settings make that harmless). A bucket made with
    another replica count is brought to ``replicas``, as when a single server became a cluster.
    """
    try:
        info = await js.stream_info(KV_STREAM_TEMPLATE.format(bucket=bucket))
    except NotFoundError:
        config = KeyValueConfig(bucket=bucket, history=history, ttl=ttl, replicas=replicas)
        return await js.create_key_value(config)
    if info.config.num_replicas != replicas:
        await js.update_stream(info.config.evolve(num_replicas=replicas))
        log.info(
            "KV bucket replicas changed",
            extra={"bucket": bucket, "from": info.config.num_replicas, "to": replicas},
        )
    return await js.key_value(bucket)


async def current_entries(kv: KeyValue, pattern: str = ">") -> list[KeyValue.Entry]:
    """The current value of every key matching `pattern`, deleted ones left out.

    Read by a pull consumer until the server reports nothing pending after a message, then
    checked against the stream's own index of subjects, taken first: a key the read missed
    (the server's pending count can be off while keys are written, nats-server#4824) is read
    by itself. A watch is not used: it can report the end early (nats.py#842).
    """
    js: JetStreamContext = kv._js
    prefix: str = kv._pre
    info = await js.stream_info(kv._stream, subjects_filter=f"{prefix}{pattern}")
    indexed = {subject.removeprefix(prefix) for subject in info.state.subjects or {}}
    found, seen = await _read_entries(kv, pattern) if indexed else ({}, set())
    slots = asyncio.Semaphore(_PARALLEL_READS)

    async def read(key: str) -> None:
        async with slots:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                return  # deleted or purged since (its marker is what the index saw)
        if entry.value:
            found[key] = entry

    await asyncio.gather(*(read(key) for key in indexed - seen))
    return sorted(found.values(), key=lambda entry: entry.revision or 0)


async def _read_entries(kv: KeyValue, pattern: str) -> tuple[dict[str, KeyValue.Entry], set[str]]:
    """The live entries read, and every key the read saw (deleted ones too)."""
    js: JetStreamContext = kv._js
    prefix: str = kv._pre
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=60,
        mem_storage=True,
    )
    sub = await js.pull_subscribe(f"{prefix}{pattern}", stream=kv._stream, config=config)
    found: dict[str, KeyValue.Entry] = {}
    seen: set[str] = set()
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        while pending > 0:
            try:
                batch = await sub.fetch(min(pending, _FETCH_BATCH), timeout=_FETCH_TIMEOUT)
            except TimeoutError:
                break  # nothing more came: the rest was removed meanwhile
            for msg in batch:
                key = msg.subject.removeprefix(prefix)
                seen.add(key)
                operation = (msg.headers or {}).get(KV_OP)
                pending = msg.metadata.num_pending
                if operation in (KV_DEL, KV_PURGE) or not msg.data:
                    found.pop(key, None)
                    continue
                seq = msg.metadata.sequence.stream
                found[key] = KeyValue.Entry(kv._name, key, msg.data, seq, None, None, operation)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return found, seen
