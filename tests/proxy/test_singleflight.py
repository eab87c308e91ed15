"""Concurrent pulls of one uncached blob or tag cause one upstream request, in one worker and
across the worker processes of one registry, and every client gets the right bytes."""

from __future__ import annotations

import asyncio
import hashlib
import shutil

import aiohttp
import pytest

from tests.fixtures.images import OCI_MANIFEST, LayoutFactory, make_image
from tests.proxy.conftest import PREFIX, CacheFactory, Upstream, http, push, stored_blob

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")

CLIENTS = 16
# The layer of the figure with one worker (its memory is measured); a smaller one for
# the case across workers, which tests the lock files, not the streaming.
LAYER_BY_WORKERS = {1: 128 * 1024 * 1024, 2: 32 * 1024 * 1024}


async def fetch_all(url: str, clients: int, accept: str = "") -> list[tuple[int, str]]:
    """Every client's status and the sha256 of the body it read."""
    timeout = aiohttp.ClientTimeout(total=300)
    headers = {"Accept": accept} if accept else {}

    async def one(session: aiohttp.ClientSession) -> tuple[int, str]:
        async with session.get(url, headers=headers) as response:
            digest = hashlib.sha256()
            async for chunk in response.content.iter_chunked(1 << 20):
                digest.update(chunk)
            return response.status, f"sha256:{digest.hexdigest()}"

    # One connection per client (no pooling), so several workers share the load.
    sessions = [
        aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True))
        for _ in range(clients)
    ]
    try:
        return await asyncio.gather(*(one(s) for s in sessions))
    finally:
        for session in sessions:
            await session.close()


def metric(text: str, name: str, label: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and label in line
    )


@pytest.mark.parametrize("workers", [1, 2])
async def test_sixteen_pulls_of_one_uncached_layer_make_one_upstream_get(
    upstream: Upstream,
    cache_factory: CacheFactory,
    oci_layout_factory: LayoutFactory,
    workers: int,
) -> None:
    image = await asyncio.to_thread(make_image, (LAYER_BY_WORKERS[workers],), 150)
    layer = image.layers[0]
    await asyncio.to_thread(
        push, oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/big:1"
    )
    cache = cache_factory(
        [{"name": "dist", "url": upstream.url, "prefix": PREFIX}],
        extra_args=["--workers", str(workers)],
    )
    url = f"{cache.url}/v2/{PREFIX}/team/big/blobs/{layer.digest}"
    results = await fetch_all(url, CLIENTS)
    assert results == [(200, layer.digest)] * CLIENTS
    assert upstream.proxy.count("GET", f"/blobs/{layer.digest}") == 1
    assert stored_blob(cache, layer.digest).stat().st_size == layer.size
    # Nothing left of the download in progress.
    assert list((cache.data_dir / "_inflight" / "spool").iterdir()) == []
    if workers == 1:
        # The others read the one download (or, arriving late, the stored blob).
        metrics = http(f"{cache.url}/metrics").body.decode()
        assert metric(metrics, "nimbus_proxy_misses_total", 'kind="blob"') == 1
        shared = metric(metrics, "nimbus_proxy_singleflight_waits_total", 'kind="blob"')
        assert shared + metric(metrics, "nimbus_proxy_hits_total", 'kind="blob"') == CLIENTS - 1
        # Streamed, never held whole: far below the 16 x 128 MiB the clients read.
        assert cache.peak_rss_kib() < 150 * 1024


async def test_concurrent_pulls_of_one_uncached_tag_make_one_upstream_get(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    image = make_image((4096,), seed=151)
    await asyncio.to_thread(
        push, oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/tag:1"
    )
    cache = cache_factory(
        [{"name": "dist", "url": upstream.url, "prefix": PREFIX}], extra_args=["--workers", "2"]
    )
    url = f"{cache.url}/v2/{PREFIX}/team/tag/manifests/1"
    results = await fetch_all(url, CLIENTS, OCI_MANIFEST)
    assert results == [(200, image.digest)] * CLIENTS
    assert upstream.proxy.count("GET", "/manifests/1") == 1
    assert upstream.proxy.count("HEAD", "/manifests/") == 0
