"""Opening a NATS KV bucket the same way in every service: created on first use, and kept at
the replica count the service is configured with (a NATS cluster keeps that many copies)."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.client import KV_STREAM_TEMPLATE
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger("nimbus.nats")

# JetStream keeps at most five copies of a stream.
MAX_REPLICAS = 5


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
