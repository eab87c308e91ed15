"""The event stream as the scale-out tests see it: manifest pushes tagged with a request id of
the test's choosing, and the events of one site read back in stream order."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors

from nimbus import streams
from proto.nimbus.v1 import events_pb2
from tests.fixtures.images import OCI_MANIFEST, Blob, canonical_json
from tests.registry.oci_client import OCIClient, Reply


@dataclass
class StreamedEvent:
    seq: int
    msg_id: str
    event: events_pb2.Event


def image_manifests(config: Blob, layer: Blob, count: int) -> list[Blob]:
    """``count`` distinct image manifests over one config and one layer."""
    return [
        Blob(
            OCI_MANIFEST,
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": config.descriptor(),
                    "layers": [layer.descriptor()],
                    "annotations": {"n": str(i)},
                }
            ),
        )
        for i in range(count)
    ]


async def put_manifest(
    client: OCIClient, name: str, tag: str, manifest: Blob, request_id: str
) -> Reply:
    """A manifest push whose event carries ``request_id``, to match the two up; the reply
    whole, for tests that check its status and the headers echoed (else `RegistryClient`)."""
    return await client.request(
        "PUT",
        f"/v2/{name}/manifests/{tag}",
        data=manifest.data,
        headers={"Content-Type": manifest.media_type, "X-Request-Id": request_id},
    )


async def site_events(
    urls: list[str], site: str, expected: int, within: float = 60.0
) -> list[StreamedEvent]:
    """Every event of ``site`` in stream order, once ``expected`` of them are there; then one
    more look, to catch any extra copy."""
    nc = await nats.connect(urls, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=5)
        deadline = time.monotonic() + within
        while True:
            # Right after a node died, the cluster may still be electing leaders.
            try:
                sub = await js.pull_subscribe(
                    streams.site_subjects(site), stream=streams.EVENTS_STREAM
                )
                break
            except (TimeoutError, nats.js.errors.APIError):
                assert time.monotonic() < deadline, "no consumer on the event stream"
                await asyncio.sleep(0.5)
        got: list[StreamedEvent] = []
        while time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(max(1, expected + 1 - len(got)), timeout=1)
            except TimeoutError:  # nats-py raises its own subclass or the plain one
                if len(got) >= expected:
                    break
                continue
            for m in msgs:
                msg_id = (m.headers or {}).get(streams.MSG_ID_HEADER, "")
                event = events_pb2.Event.FromString(m.data)
                got.append(StreamedEvent(m.metadata.sequence.stream, msg_id, event))
                await m.ack()
        await sub.unsubscribe()
        return got
    finally:
        await nc.close()
