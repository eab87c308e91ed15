"""The operator's pages against a real registry, NATS and notifier: add a webhook (its secret
shown once), see a delivery after a push, test and redeliver, the live events stream, a GC
dry run, each service's health."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.console.conftest import Console, console_config, start_console
from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.notifier import NotifierFactory
from tests.fixtures.registry import RegistryProcess
from tests.notifier.receiver import Receiver
from tests.registry.oci_client import OCIClient

TOKEN = "ops-admin-token-0123456789"


@pytest.fixture
async def stack(
    tmp_path: Path, nats_factory: NatsFactory, notifier_factory: NotifierFactory
) -> AsyncIterator[tuple[Console, RegistryProcess]]:
    nats = nats_factory()
    registry = RegistryProcess(
        tmp_path / "data", ["--nats", nats.url, "--admin-token", TOKEN, "--site", "a"]
    ).start()
    notifier = notifier_factory(nats.url, ["--admin-token", TOKEN])
    config = console_config(
        registry, admin_token=TOKEN, notifier_grpc=notifier.address, registry_username=""
    )
    server, clients = await start_console(config)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Console(str(server.make_url("")).rstrip("/"), clients, http), registry
    await server.close()
    registry.stop()


async def _until(console: Console, path: str, pattern: str, within: float = 30) -> str:
    deadline = time.monotonic() + within
    while True:
        _, page = await console.get(path)
        if re.search(pattern, page, re.S):
            return page
        assert time.monotonic() < deadline, f"{pattern!r} not on {path} within {within}s"
        await asyncio.sleep(0.3)


async def test_webhook_delivery_redeliver_events_gc_health(
    stack: tuple[Console, RegistryProcess],
) -> None:
    console, registry = stack
    receiver = await Receiver().start()
    try:
        await console.sign_in(admin_token=TOKEN)
        token = await console.csrf("/webhooks/new")
        status, page = await console.post(
            "/webhooks",
            {
                "csrf_token": token,
                "url": receiver.url,
                "description": "deploys",
                "actions": "push",
                "repositories": "ops/*",
                "body_format": "cloudevents",
                "enabled": "on",
            },
        )
        assert status == 200, page
        secret = re.search(r'data-testid="secret">(whsec_[A-Za-z0-9+/=]+)<', page)
        assert secret, page
        webhook_id = re.search(r'href="/webhooks/([^"/]+)"', page.split("<main", 1)[1])
        assert webhook_id
        hook = f"/webhooks/{webhook_id.group(1)}"
        # The secret never again: not on the list, not on the webhook's page, not when editing.
        for path in ("/webhooks", hook, hook + "/edit"):
            status, page = await console.get(path)
            assert status == 200 and secret.group(1) not in page, path
        _, page = await console.get("/webhooks")
        assert receiver.url in page and "cloudevents" in page and "ops/*" in page

        # The live feed, opened before the push.
        async with console.http.get(console.url + "/events/stream?action=push") as feed:
            assert feed.headers["Content-Type"].startswith("text/event-stream")
            async with aiohttp.ClientSession() as http:
                await OCIClient(http, registry.url).push_image("ops/app", make_image(seed=41), "v1")
            event = await asyncio.wait_for(_next_event(feed), 20)
        assert event["target"]["repository"] == "ops/app" and event["action"] == "push"
        # Without a script the page already lists the latest events, with the same filters.
        _, page = await console.get("/events?action=push&repository=ops/*")
        rows = re.findall(r'<tr data-id="([^"]+)">(.*?)</tr>', page, re.S)
        # The push's blobs, then its manifest (newest first); the feed's first is among them.
        assert event["id"] in [ident for ident, _ in rows] and len(rows) >= 2
        assert re.search(r"<td>push</td><td>ops/app</td><td>v1</td>", rows[0][1])
        assert all("<td>ops/app</td>" in row for _, row in rows)
        _, page = await console.get("/events?action=delete")
        assert 'data-id="' not in page and "No events yet." in page

        page = await _until(console, hook, r'class="status succeeded">succeeded<')
        assert "push ops/app:v1" in page
        assert receiver.delivered, "the receiver got nothing"

        token = await console.csrf(hook)
        status, page = await console.post(hook + "/test", {"csrf_token": token})
        assert status == 200 and re.search(r'data-testid="test-result".*HTTP 200', page, re.S)

        delivery = re.search(r'href="(/deliveries/[^"]+)"', page)
        assert delivery
        _, page = await console.get(delivery.group(1))
        before = _attempts(page)
        assert before and all("HTTP 200" in a for a in before)
        token = await console.csrf(delivery.group(1))
        status, page = await console.post(delivery.group(1) + "/redeliver", {"csrf_token": token})
        assert status == 200
        after = _attempts(page)
        assert len(after) == len(before) + 1 and "HTTP 200" in after[-1]

        token = await console.csrf("/gc")
        status, page = await console.post("/gc", {"csrf_token": token, "mode": "dry-run"})
        assert status == 200 and "Dry run" in page
        assert re.search(r'<button[^>]*value="run"[^>]*data-after-dry-run >', page), page
        # The same dry run, live: the GarbageCollect stream as server-sent events.
        async with console.http.post(
            console.url + "/gc",
            data={"csrf_token": token, "mode": "dry-run"},
            headers={"Accept": "text/event-stream"},
        ) as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            progress = await _all_events(stream, "gc")
        phases = [p["phase"] for p in progress]
        assert phases == sorted(phases) and phases[0] == 1 and phases[-1] == 5, phases
        assert progress[-1]["done"] and progress[-1]["dry_run"]
        assert progress[-1]["freed"].endswith("B")
        assert all(p["phase_name"] for p in progress)

        _, page = await console.get("/health")
        rows = re.findall(r"<tr><td>(.*?)</tr>", page, re.S)
        assert any("registry (gRPC)" in r and "SERVING" in r for r in rows)
        assert any("notifier (gRPC)" in r and ">SERVING<" in r for r in rows)
        assert any("registry (OCI API)" in r and "SERVING" in r for r in rows)
    finally:
        await receiver.stop()


def _attempts(page: str) -> list[str]:
    table = re.search(r'data-testid="attempts".*?<tbody>(.*?)</tbody>', page, re.S)
    assert table
    return re.findall(r"<tr><td>\d+</td>.*?</tr>", table.group(1), re.S)


async def _next_event(feed: aiohttp.ClientResponse) -> dict[str, object]:
    kind = ""
    async for raw in feed.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind == "registry":
            found: dict[str, object] = json.loads(line[6:])
            return found
    raise AssertionError("the stream ended")


async def _all_events(stream: aiohttp.ClientResponse, wanted: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    kind = ""
    async for raw in stream.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            assert kind == wanted, (kind, line)
            found.append(json.loads(line[6:]))
    return found
