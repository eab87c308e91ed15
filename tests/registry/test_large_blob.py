"""A 1 GiB blob through the registry in bounded memory: streamed in, streamed out."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient

GIB = 1 << 30
BLOCK = 1 << 20
PATCHES = 2
RSS_LIMIT_KIB = 150 * 1024


def _blocks() -> list[bytes]:
    """Random blocks of uneven sizes: the blob cycles through them, out of step with 1 MiB."""
    rng = random.Random(1234)
    return [rng.randbytes(BLOCK + i * 4099) for i in range(3)]


async def _stream(
    blocks: list[bytes], offset: int, length: int, hasher: Any
) -> AsyncIterator[bytes]:
    """``length`` bytes of the endless cycle of ``blocks``, starting at ``offset``."""
    period = sum(len(b) for b in blocks)
    data = b"".join(blocks)
    position = offset % period
    remaining = length
    while remaining:
        piece = data[position : position + min(remaining, BLOCK)]
        hasher.update(piece)
        yield piece
        remaining -= len(piece)
        position = (position + len(piece)) % period


@pytest.mark.slow
async def test_one_gib_blob_round_trip_in_bounded_memory(
    registry: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    client = OCIClient(http, registry.url)
    blocks = _blocks()
    name = "large/blob"
    sent = hashlib.sha256()

    location = await client.start_upload(name)
    part = GIB // PATCHES
    for i in range(PATCHES):
        first = i * part
        async with http.patch(
            client.url(location),
            data=_stream(blocks, first, part, sent),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{first}-{first + part - 1}",
                "Content-Length": str(part),
            },
        ) as resp:
            assert resp.status == 202, await resp.text()
            assert resp.headers["Range"] == f"0-{first + part - 1}"
            location = resp.headers["Location"]
    digest = f"sha256:{sent.hexdigest()}"
    reply = await client.finish(location, digest)
    assert reply.status == 201, reply.body
    assert reply.headers["Docker-Content-Digest"] == digest

    head = await client.request("HEAD", f"/v2/{name}/blobs/{digest}")
    assert int(head.headers["Content-Length"]) == GIB

    received = hashlib.sha256()
    size = 0
    async with http.get(client.url(f"/v2/{name}/blobs/{digest}")) as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == GIB
        async for chunk in resp.content.iter_chunked(BLOCK):
            received.update(chunk)
            size += len(chunk)
    assert size == GIB
    assert f"sha256:{received.hexdigest()}" == digest

    # A range read from the far end of the blob.
    tail = 1000
    async with http.get(
        client.url(f"/v2/{name}/blobs/{digest}"), headers={"Range": f"bytes={GIB - tail}-"}
    ) as resp:
        assert resp.status == 206
        expected = hashlib.sha256()
        async for _ in _stream(blocks, GIB - tail, tail, expected):
            pass
        assert hashlib.sha256(await resp.read()).digest() == expected.digest()

    peak = registry.peak_rss_kib()
    print(f"registry peak RSS after 1 GiB in and out: {peak / 1024:.1f} MiB")
    assert peak < RSS_LIMIT_KIB, f"registry peak RSS {peak / 1024:.0f} MiB"
