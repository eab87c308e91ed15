"""A `Range` on a blob still being filled from the upstream is answered from the download in
progress (206, the exact bytes, no second upstream request); like a whole blob's, the range's
last byte waits for the digest check, so no response completes with unverified bytes."""

from __future__ import annotations

import asyncio
import shutil

import aiohttp
import pytest

from tests.fixtures.images import LayoutFactory, make_image
from tests.proxy.conftest import PREFIX, CacheFactory, Upstream, push

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")

HELD_AT = 1 << 20


async def read_range(
    session: aiohttp.ClientSession, url: str, header: str
) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url, headers={"Range": header}) as response:
        return response.status, dict(response.headers), await response.read()


async def test_a_range_of_a_blob_being_filled_is_served_from_the_download(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    image = make_image((3 << 20,), seed=180)
    layer = max(image.blobs, key=lambda blob: blob.size)
    data = layer.data
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/app:1")
    cache = cache_factory([{"name": "dist", "url": upstream.url, "prefix": PREFIX}])
    url = f"{cache.url}/v2/{PREFIX}/team/app/blobs/{layer.digest}"
    upstream.proxy.hold_blobs_after = HELD_AT

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        whole = asyncio.create_task(session.get(url))
        # A range inside what has arrived, one across the held point, a resume to the end.
        inside = asyncio.create_task(read_range(session, url, "bytes=1000-9999"))
        around = f"bytes={HELD_AT - 10}-{HELD_AT + 9}"
        across = asyncio.create_task(read_range(session, url, around))
        tail = asyncio.create_task(read_range(session, url, f"bytes={len(data) - 5000}-"))
        # Held upstream: none of them may complete, the last byte waits for the check.
        done, _ = await asyncio.wait({inside, across, tail}, timeout=2)
        assert not done
        upstream.proxy.release()

        status, headers, body = await inside
        assert status == 206 and body == data[1000:10000]
        assert headers["Content-Range"] == f"bytes 1000-9999/{len(data)}"
        assert headers["Content-Length"] == "9000"
        status, headers, body = await across
        assert status == 206 and body == data[HELD_AT - 10 : HELD_AT + 10]
        status, headers, body = await tail
        assert status == 206 and body == data[-5000:]
        assert headers["Content-Range"] == f"bytes {len(data) - 5000}-{len(data) - 1}/{len(data)}"
        async with await whole as response:
            assert response.status == 200 and await response.read() == data

        # One download served them all.
        assert upstream.proxy.count("GET", f"/blobs/{layer.digest}") == 1

        # Stored now: ranges come from storage, and an unsatisfiable one is refused.
        status, headers, body = await read_range(session, url, "bytes=10-19")
        assert status == 206 and body == data[10:20]
        status, headers, _ = await read_range(session, url, f"bytes={len(data)}-")
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"


async def test_an_unsatisfiable_range_during_a_fill_is_refused(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    image = make_image((2 << 20,), seed=181)
    layer = max(image.blobs, key=lambda blob: blob.size)
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/app:1")
    cache = cache_factory([{"name": "dist", "url": upstream.url, "prefix": PREFIX}])
    url = f"{cache.url}/v2/{PREFIX}/team/app/blobs/{layer.digest}"
    upstream.proxy.hold_blobs_after = HELD_AT

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        whole = asyncio.create_task(session.get(url))
        status, headers, _ = await read_range(session, url, f"bytes={layer.size + 10}-")
        assert status == 416 and headers["Content-Range"] == f"bytes */{layer.size}"
        upstream.proxy.release()
        async with await whole as response:
            assert await response.read() == layer.data
