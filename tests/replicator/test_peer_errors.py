"""A peer that answers 500 to blob upload completions, as site b did in the chaos soak.

The peer is a real registry behind a small HTTP proxy of the test, which answers 500 to the
completions (PUT) of one image's layer for as long as the test says, and to every other
completion after passing it on (so the blob is stored but the replicator hears an error).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from nimbus.oci import mediatypes as mt
from proto.nimbus.v1 import replication_pb2
from replicator.copier import Copier
from tests.fixtures.images import Blob, Image, canonical_json, make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.registry import RegistryFactory
from tests.replicator.conftest import (
    ClientFactory,
    ReplicatorFactory,
    StubFactory,
    assert_complete,
    eventually,
    peer,
    push_image,
)

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
S3_ERROR = b'{"errors":[{"code":"UNKNOWN","message":"NoSuchKey: CopyObject"}]}'


@dataclass
class FaultyProxy:
    """Passes requests to ``upstream``; answers 500 to blob upload completions it picks."""

    upstream: str
    session: aiohttp.ClientSession
    # Completions of these digests are refused (not passed on) while they are in the set.
    refused: set[str] = field(default_factory=set)
    url: str = ""
    refusals: dict[str, int] = field(default_factory=dict)
    # Completions of these digests wait until their event is set.
    holds: dict[str, asyncio.Event] = field(default_factory=dict)
    # Digests of every completion that arrived, in order.
    seen: list[str] = field(default_factory=list)
    # Every second completion passed on is answered 500 after all.
    flaky: bool = True
    answered_500_after_storing: int = 0
    _count: itertools.count[int] = field(default_factory=itertools.count)

    def completion_of(self, request: web.Request) -> str | None:
        if request.method == "PUT" and "/blobs/uploads/" in request.path:
            return request.query.get("digest")
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        digest = self.completion_of(request)
        if digest is not None:
            self.seen.append(digest)
            if digest in self.holds:
                await self.holds[digest].wait()
        if digest is not None and digest in self.refused:
            self.refusals[digest] = self.refusals.get(digest, 0) + 1
            return web.Response(status=500, body=S3_ERROR, content_type="application/json")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self.session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            stored = digest is not None and upstream.status == 201
            if stored and self.flaky and next(self._count) % 2 == 0:
                # Stored, but the client hears a server error: it must find the blob later.
                self.answered_500_after_storing += 1
                return web.Response(status=500, body=S3_ERROR, content_type="application/json")
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            out.pop("Content-Encoding", None)
            return web.Response(status=upstream.status, headers=out, body=data)


ProxyFactory = Callable[[str], Awaitable[FaultyProxy]]


@pytest.fixture
async def faulty_proxy() -> AsyncIterator[ProxyFactory]:
    """``await faulty_proxy(upstream)``: a FaultyProxy serving on an ephemeral port."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(upstream: str) -> FaultyProxy:
        session = aiohttp.ClientSession(auto_decompress=False)
        sessions.append(session)
        proxy = FaultyProxy(upstream, session)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        proxy.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return proxy

    yield make
    for runner in runners:
        await runner.cleanup()
    for session in sessions:
        await session.close()


async def test_peer_answering_500_to_one_image_does_not_stop_its_lane_or_the_peer(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_client: ClientFactory,
    faulty_proxy: ProxyFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    b = registry_factory(["--nats", nats_url, "--site", "b"])
    proxy = await faulty_proxy(b.url)

    poisoned = make_image((2000,), seed=700)
    layer = poisoned.blobs[-1].digest
    proxy.refused.add(layer)
    # Few tries of a server error, and recorded failures tried again every second.
    monkeypatch.setenv("NIMBUS_WORKER_ERROR_ATTEMPTS", "3")
    monkeypatch.setenv("NIMBUS_WORKER_FAILURE_RETRY_INTERVAL", "1")
    api = replication_api(replicator_factory(nats_url, a.url, "a").address)
    await api.CreatePeer(peer("b", proxy.url, site="b"))

    source = oci_client(a.url)
    await push_image(source, "flaky/app", "poisoned", poisoned)
    # Behind it in its repository's lane, and in another repository.
    later: dict[tuple[str, str], Image] = {}
    for i in range(6):
        later[("flaky/app", f"t{i}")] = make_image((700, 300), seed=710 + i)
        later[("flaky/other", f"t{i}")] = make_image((500,), seed=730 + i)
    for (repository, tag), image in later.items():
        await push_image(source, repository, tag, image)

    at_b = oci_client(b.url)

    async def later_ones_arrived() -> None:
        for (repository, tag), image in later.items():
            await assert_complete(at_b, repository, tag, image)

    # The refused image does not hold back the events behind it, in its lane or elsewhere.
    await eventually(later_ones_arrived, within=90)
    assert proxy.refusals.get(layer, 0) >= 3
    assert await at_b.head_manifest("flaky/app", "poisoned") is None

    async def recorded() -> replication_pb2.Failure:
        listed = await api.ListFailures(replication_pb2.ListFailuresRequest(peer="b"))
        found = [f for f in listed.failures if f.reference == "poisoned"]
        assert found, listed
        return found[0]

    failure = await eventually(recorded)
    assert failure.kind == "peer-unreachable" and "500" in failure.reason
    assert proxy.answered_500_after_storing > 0

    # The peer heals: the recorded failure is tried again by itself and the image arrives.
    proxy.refused.clear()

    async def healed() -> None:
        await assert_complete(at_b, "flaky/app", "poisoned", poisoned)
        listed = await api.ListFailures(replication_pb2.ListFailuresRequest(peer="b"))
        assert not list(listed.failures)

    await eventually(healed, within=90)
    for (repository, tag), image in later.items():
        await assert_complete(at_b, repository, tag, image)


def sharing_layers(image: Image, seed: int) -> Image:
    """Another image with ``image``'s layers and a config of its own."""
    config = Blob(mt.OCI_CONFIG, canonical_json({"os": "linux", "salt": seed}))
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in image.layers],
    }
    manifest = Blob(mt.OCI_MANIFEST, canonical_json(doc))
    return Image(config, image.layers, manifest, image.platform)


async def test_a_cancelled_copy_of_a_shared_blob_is_not_the_cancellation_of_its_waiter(
    registry_factory: RegistryFactory, oci_client: ClientFactory, faulty_proxy: ProxyFactory
) -> None:
    """Two copies into one repository share one transfer of a common layer. When the copy
    doing the transfer is cancelled, the one waiting for it copies the layer itself; before, it
    got the other's cancellation as its own, which ended its lane as if stopped, its events
    held for good."""
    a, b = registry_factory(), registry_factory()
    proxy = await faulty_proxy(b.url)
    proxy.flaky = False
    one = make_image((3000,), seed=801)
    layer = one.blobs[-1]
    two = sharing_layers(one, seed=802)
    source = oci_client(a.url)
    await push_image(source, "shared/app", "one", one)
    await push_image(source, "shared/app", "two", two)
    release = proxy.holds[layer.digest] = asyncio.Event()
    copier = Copier(source, oci_client(proxy.url))

    first = asyncio.create_task(copier.copy("shared/app", "one"))

    async def seen(digest: str) -> None:
        assert digest in proxy.seen

    await eventually(lambda: seen(layer.digest))
    second = asyncio.create_task(copier.copy("shared/app", "two"))
    # Its other blob went up: it waits on the first copy's transfer of the layer now.
    await eventually(lambda: seen(two.config.digest))
    assert not second.done()
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    release.set()

    result = await asyncio.wait_for(second, timeout=60)
    assert result.manifests_copied == 1
    await assert_complete(oci_client(b.url), "shared/app", "two", two)
