"""A real webhook receiver: an aiohttp server on a loopback port that records every request.

Its answers are scripted: a queue of statuses to give first (then `default_status`), or
`hang` to accept requests and never answer, or `hold()` to keep requests waiting until
`release()` (`arrived` lists them as they come, answered or not). It can be started late,
stopped and started again on the same port, to play a receiver that is down. Given a server
TLS context it listens on https (one asking for client certificates makes it an mTLS receiver).
`answer_delay` makes every answer take that long; `most_at_once` says, per `webhook-id`, how
many requests of it were in the receiver at the same time at most.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fixtures.registry import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float
    # The common name of the client certificate the sender presented over https ("" for none).
    client_name: str = ""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


def _client_name(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class Receiver:
    def __init__(self, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.requests: list[Received] = []
        self.arrived: list[Received] = []
        self.script: deque[int] = deque()
        self.default_status = 200
        self.extra_headers: dict[str, str] = {}
        self.hang = False
        self.answer_delay = 0.0
        self.most_at_once: Counter[str] = Counter()
        self._at_once: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        self._open = asyncio.Event()
        self._open.set()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/hook"

    @property
    def delivered(self) -> list[Received]:
        """Requests answered with 2xx."""
        return [r for r in self.requests if 200 <= r.status < 300]

    async def _handle(self, request: web.Request) -> web.Response:
        ident = request.headers.get("webhook-id", "")
        self._at_once[ident] += 1
        self.most_at_once[ident] = max(self.most_at_once[ident], self._at_once[ident])
        try:
            return await self._answer(request)
        finally:
            self._at_once[ident] -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrived.append(Received(dict(request.headers), body, 0, time.monotonic()))
        async with self._changed:
            self._changed.notify_all()
        await self._open.wait()
        if self.hang:
            await asyncio.sleep(3600)
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        status = self.script.popleft() if self.script else self.default_status
        self.requests.append(
            Received(dict(request.headers), body, status, time.monotonic(), _client_name(request))
        )
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=status, text=f"answer {status}", headers=self.extra_headers)

    def hold(self) -> None:
        """Keep the requests that come from now on waiting for `release()`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_delivered(self, count: int, within: float = 30.0) -> list[Received]:
        """Wait until `count` requests were answered with 2xx; all of them."""

        def enough() -> bool:
            return len(self.delivered) >= count

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(enough), within)
            except TimeoutError:
                raise AssertionError(
                    f"{len(self.delivered)} of {count} deliveries arrived within {within}s "
                    f"({len(self.requests)} requests)"
                ) from None
        return self.delivered

    async def wait_requests(self, count: int, within: float = 30.0) -> list[Received]:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.requests) >= count), within
            )
        return self.requests

    async def wait_arrived(self, count: int, within: float = 30.0) -> list[Received]:
        """Wait until `count` requests arrived, answered yet or not."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.arrived) >= count), within
            )
        return self.arrived
