"""Two registry replicas over one S3 bucket and one NATS: each acknowledged push, whichever
replica took it, is one event in the stream, never none and never two."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.fixtures.images import Blob, make_blob
from tests.fixtures.nats import NatsServer
from tests.fixtures.registry import RegistryFactory, RegistryProcess
from tests.fixtures.s3 import S3Server
from tests.registry.oci_client import OCIClient, Reply
from tests.scaleout.stream import image_manifests, put_manifest, site_events

MiB = 1 << 20
SERIES = 10
RACERS = 8


@dataclass
class Push:
    """An acknowledged push: which replica took it, and what it stored."""

    request_id: str
    replica: RegistryProcess
    digest: str
    tag: str = ""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


def new_request_id() -> str:
    return uuid.uuid4().hex


async def test_each_acknowledged_push_is_one_event_across_two_replicas(
    registry_factory: RegistryFactory,
    s3_server: S3Server,
    nats_server: NatsServer,
    http: aiohttp.ClientSession,
) -> None:
    site, bucket = f"r{uuid.uuid4().hex[:10]}", s3_server.create_bucket()
    args = ["--nats", nats_server.url, "--site", site, "--s3-part-size", str(5 * MiB)]
    a, b = (registry_factory(storage="s3", s3_bucket=bucket, extra_args=args) for _ in "ab")
    clients = {a: OCIClient(http, a.url), b: OCIClient(http, b.url)}
    name = "replicas/app"
    pushes: list[Push] = []

    def acknowledged(reply: Reply, replica: RegistryProcess, digest: str, tag: str = "") -> None:
        assert reply.status == 201, reply.body
        assert reply.headers["Docker-Content-Digest"] == digest
        pushes.append(Push(reply.headers["X-Request-Id"], replica, digest, tag))

    # A blob in one request on a; a layer uploaded across both: started on a, a chunk on b,
    # closed on a. The upload's one event comes from the replica that closed it.
    config = Blob("application/vnd.oci.image.config.v1+json", b"{}")
    reply = await clients[a].request(
        "POST",
        f"/v2/{name}/blobs/uploads/?digest={config.digest}",
        data=config.data,
        headers={"X-Request-Id": new_request_id()},
    )
    acknowledged(reply, a, config.digest)
    layer = make_blob(6 * MiB + 1234, seed=7)
    location = await clients[a].start_upload(name)
    assert (await clients[b].patch(location, layer.data[: 5 * MiB + 3], 0)).status == 202
    reply = await clients[a].request(
        "PUT",
        f"{location}{'&' if '?' in location else '?'}digest={layer.digest}",
        data=layer.data[5 * MiB + 3 :],
        headers={"X-Request-Id": new_request_id()},
    )
    acknowledged(reply, a, layer.digest)

    # Manifests pushed one after another, alternating replicas.
    manifests = image_manifests(config, layer, SERIES + RACERS)
    replicas = itertools.cycle((a, b))
    series = []
    for i, manifest in enumerate(manifests[:SERIES]):
        replica = next(replicas)
        reply = await put_manifest(clients[replica], name, f"v{i}", manifest, new_request_id())
        acknowledged(reply, replica, manifest.digest, f"v{i}")
        series.append(pushes[-1].request_id)

    # One tag raced from both replicas: distinct manifests, and the same one twice over.
    racers = [(a if i % 2 else b, manifest) for i, manifest in enumerate(manifests[SERIES:])] + [
        (a, manifests[0]),
        (b, manifests[0]),
    ]
    replies = await asyncio.gather(
        *(
            put_manifest(clients[replica], name, "latest", manifest, new_request_id())
            for replica, manifest in racers
        )
    )
    for (replica, manifest), reply in zip(racers, replies, strict=True):
        acknowledged(reply, replica, manifest.digest, "latest")

    events = await site_events([nats_server.url], site, expected=len(pushes))
    assert Counter(e.msg_id for e in events).most_common(1)[0][1] == 1
    by_request = Counter(e.event.request.id for e in events)
    assert by_request == Counter(p.request_id for p in pushes), "one event per push, no other"
    for push in pushes:
        (event,) = [e.event for e in events if e.event.request.id == push.request_id]
        assert event.action == "push"
        assert (event.target.digest, event.target.tag) == (push.digest, push.tag)
        assert event.target.repository == name
        assert event.source.addr.endswith(f":{push.replica.port}")
    # Pushes acknowledged one after another are in the stream in that order.
    in_stream = [e.event.request.id for e in events if e.event.request.id in series]
    assert in_stream == series
