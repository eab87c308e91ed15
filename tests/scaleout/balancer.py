"""A round-robin HTTP load balancer for tests: each request goes to the next replica.

Bodies stream through both ways; the client's Host header is kept, so the replicas' answers
(relative Locations, redirects) keep pointing at the balancer.
"""

from __future__ import annotations

import itertools
from collections import Counter

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tests.fixtures.registry import free_port

# Headers of one connection, not of the message (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
CHUNK = 1 << 16


class RoundRobin:
    def __init__(self, backends: list[str]) -> None:
        self.backends = [b.rstrip("/") for b in backends]
        self._next = itertools.cycle(range(len(self.backends)))
        # Requests each replica served, to show that the traffic was really split.
        self.served: Counter[int] = Counter()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    async def start(self) -> RoundRobin:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=300), auto_decompress=False
        )
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        index = next(self._next)
        self.served[index] += 1
        # A multidict: clients repeat some headers (skopeo sends one Accept per media type).
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
        )
        body = request.content if request.body_exists else None
        async with self._session.request(
            request.method,
            URL(self.backends[index] + request.raw_path, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
        ) as upstream:
            reply_headers = CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
            )
            response = web.StreamResponse(status=upstream.status, headers=reply_headers)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
