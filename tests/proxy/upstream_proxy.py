"""A small HTTP proxy in front of an upstream registry: counts what the cache asks, and fails on
demand (an error status for everything, bytes altered or cut off in blob bodies, a canned answer
for one path). It runs on its own event loop in a thread, so synchronous tests can use it."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.fixtures.registry import free_port

_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}
)


@dataclass
class Canned:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class UpstreamProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.port = free_port()
        self.requests: list[tuple[str, str]] = []
        # Faults, set by the tests between requests.
        self.status: int | None = None
        self.status_headers: dict[str, str] = {}
        self.corrupt_blobs = False
        self.cut_blobs_after: int | None = None
        # Blob bodies pause after this many bytes until `release()`.
        self.hold_blobs_after: int | None = None
        self._released: asyncio.Event | None = None
        self.canned: dict[str, Canned] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for m, p in self.requests if m == method and path_part in p)

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter(self.requests)

    def release(self) -> None:
        """Let held blob bodies go on."""
        released = self._released
        assert released is not None
        self._loop.call_soon_threadsafe(released.set)

    def start(self) -> UpstreamProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._released = asyncio.Event()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        canned = self.canned.get(request.path)
        if canned is not None:
            return web.Response(status=canned.status, body=canned.body, headers=canned.headers)
        if self.status is not None:
            return web.Response(status=self.status, headers=self.status_headers)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            headers=headers,
            data=await request.read() if request.can_read_body else None,
            allow_redirects=False,
        ) as upstream:
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            if "Content-Length" in upstream.headers:
                out["Content-Length"] = upstream.headers["Content-Length"]
            response = web.StreamResponse(status=upstream.status, headers=out)
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            blob = "/blobs/" in request.path and upstream.status == 200
            sent = 0
            async for chunk in upstream.content.iter_chunked(65536):
                if blob and self.corrupt_blobs and sent == 0:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                if blob and self.cut_blobs_after is not None:
                    if sent + len(chunk) > self.cut_blobs_after:
                        await response.write(chunk[: self.cut_blobs_after - sent])
                        assert request.transport is not None
                        request.transport.abort()
                        return response
                hold = self.hold_blobs_after
                if blob and hold is not None and sent <= hold < sent + len(chunk):
                    await response.write(chunk[: hold - sent])
                    assert self._released is not None
                    await self._released.wait()
                    chunk = chunk[hold - sent :]
                    sent = hold
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response
