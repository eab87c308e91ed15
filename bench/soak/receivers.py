"""The soak's own webhook receivers: one slow, one flaky (5xx and answers after the sender's
timeout). Each checks the Standard Webhooks signature of every request and counts, per request
id of the event, the deliveries it accepted."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bench.soak.topology import LOOPBACK, servers_ports


@dataclass
class Receiver:
    name: str
    delay: float = 0.0  # seconds before every answer
    fail_rate: float = 0.0  # share answered 503
    hang_rate: float = 0.0  # share answered only after the notifier gave up waiting
    hang_seconds: float = 4.0
    secret: str = ""
    port: int = field(default_factory=lambda: servers_ports(1)[0])
    # "site|request id" of each event accepted (answered 2xx) -> how many times.
    accepted: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    refused: int = 0
    bad_signatures: int = 0
    _runner: web.AppRunner | None = None
    _random: random.Random = field(default_factory=lambda: random.Random(17))

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/hook"

    @property
    def up(self) -> bool:
        return self._runner is not None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=400, text="bad signature")
        roll = self._random.random()
        if roll < self.fail_rate:
            self.refused += 1
            return web.Response(status=503, text="flaky")
        await asyncio.sleep(
            self.hang_seconds if roll < self.fail_rate + self.hang_rate else self.delay
        )
        for event in json.loads(body).get("events", []):
            rid = (event.get("request") or {}).get("id", "")
            site = (event.get("source") or {}).get("site", "")
            if rid:
                self.accepted[f"{site}|{rid}"] += 1
        return web.Response(status=200, text="ok")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, self.port).start()
        self._runner = runner
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


def make_receivers() -> list[Receiver]:
    return [
        Receiver("slow", delay=0.3),
        Receiver("flaky", fail_rate=0.15, hang_rate=0.03),
    ]
