"""The replication pages against a real replicator, NATS and registries: peers with their
rules, the live backlog following a push down to 0, the last hour's throughput and lag, a
failure (wrong credentials at a peer) with its reason and a retry after the fix, and a sync
whose progress streams as server-sent events (and, without a script, a page with the result)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from google.protobuf.field_mask_pb2 import FieldMask

from proto.nimbus.v1 import replication_pb2 as plb
from proto.nimbus.v1 import replication_pb2_grpc
from tests.console.conftest import Console, console_config, start_console
from tests.console.readable import assert_readable
from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.notifier import NotifierFactory
from tests.fixtures.process import ChildProcess
from tests.fixtures.registry import RegistryFactory, RegistryProcess, free_port
from tests.fixtures.users import write_htpasswd
from tests.registry.oci_client import OCIClient

TOKEN = "replication-admin-token-0123456789"
PEER_USER, PEER_PASSWORD = "mirror", "mirror-Pa55word!"


class Replicator(ChildProcess):
    """`nimbus replicator` for one site, with short waits for tests."""

    stop_timeout = 15.0

    def __init__(self, work_dir: Path, nats_url: str, registry_url: str, site: str) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.args = [
            sys.executable, "-m", "nimbus.cli", "replicator",
            "--nats", nats_url, "--site", site, "--registry", registry_url,
            "--grpc-listen", self.address, "--admin-token", TOKEN,
            "--ack-wait", "3", "--retry-max", "1",
        ]  # fmt: skip
        super().__init__(work_dir / f"replicator-{site}.log")

    def start(self) -> Replicator:
        proc = self.spawn(self.args, {**os.environ, "NIMBUS_WORKER_RETRY_INITIAL": "0.1"})
        deadline = time.monotonic() + 30
        while "replicator running" not in self.log_text():
            if proc.poll() is not None:
                raise RuntimeError(f"replicator exited: {self.log_text()[-2000:]}")
            assert time.monotonic() < deadline, "replicator did not start"
            time.sleep(0.05)
        return self


@dataclass
class Sites:
    console: Console
    a: RegistryProcess
    b: RegistryProcess
    locked: RegistryProcess
    api: replication_pb2_grpc.ReplicationStub


@pytest.fixture
def replicator(tmp_path: Path) -> Iterator[list[Replicator]]:
    started: list[Replicator] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
async def sites(
    tmp_path: Path,
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    notifier_factory: NotifierFactory,
    replicator: list[Replicator],
) -> AsyncIterator[Sites]:
    nats = nats_factory()
    a = registry_factory(["--nats", nats.url, "--admin-token", TOKEN, "--site", "a"])
    b = registry_factory(["--site", "b"])
    auth = tmp_path / "auth"
    auth.mkdir()
    htpasswd = write_htpasswd(auth / "htpasswd", {PEER_USER: PEER_PASSWORD})
    access = [{"repositories": ["**"], "users": [PEER_USER], "actions": ["*"]}]
    (auth / "registry.yaml").write_text(
        yaml.safe_dump({"auth": {"htpasswd": str(htpasswd), "access": access}})
    )
    locked = registry_factory(["--config", str(auth / "registry.yaml")])
    replicator.append(Replicator(tmp_path, nats.url, a.url, "a").start())
    notifier = notifier_factory(nats.url, ["--admin-token", TOKEN])
    config = console_config(
        a,
        admin_token=TOKEN,
        replicator_grpc=replicator[0].address,
        notifier_grpc=notifier.address,
        registry_username="",
    )
    server, clients = await start_console(config)
    channel = grpc.aio.insecure_channel(replicator[0].address)
    api = replication_pb2_grpc.ReplicationStub(channel)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        console = Console(str(server.make_url("")).rstrip("/"), clients, http)
        yield Sites(console, a, b, locked, api)
    await channel.close()
    await server.close()


AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def _events(feed: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    kind = ""
    async for raw in feed.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:])


async def _status_until(feed: aiohttp.ClientResponse, peer: str, copied: str) -> list[Any]:
    """The status events of `peer` until one shows backlog 0 and `copied`."""
    seen = []
    async for kind, data in _events(feed):
        assert kind == "status", (kind, data)
        mine = [p for p in data["peers"] if p["peer"] == peer]
        assert len(mine) == 1, data
        seen.append(mine[0])
        if mine[0]["backlog"] == 0 and mine[0]["copied"].startswith(copied):
            return seen
    raise AssertionError(f"the stream ended: {seen}")


async def test_peers_backlog_chart_failure_retry_and_sync(sites: Sites) -> None:
    console, api = sites.console, sites.api
    async with aiohttp.ClientSession() as http:
        oci_a = OCIClient(http, sites.a.url)
        # There before the peer: only a sync copies these.
        old = {
            tag: make_image((2000 + i * 100,), seed=60 + i) for i, tag in enumerate(("v1", "v2"))
        }
        for tag, image in old.items():
            await oci_a.push_image("shop/base", image, tag)

        rule = plb.Rule(include=["shop/*"], exclude=["shop/tmp"], tag_pattern="v*")
        await api.CreatePeer(
            plb.CreatePeerRequest(peer=plb.Peer(name="b", url=sites.b.url, site="b", rules=[rule])),
            metadata=AUTH,
        )
        wrong = plb.Credentials(username=PEER_USER, password="not-the-password")
        locked_rule = plb.Rule(include=["locked/*"])
        await api.CreatePeer(
            plb.CreatePeerRequest(
                peer=plb.Peer(
                    name="locked", url=sites.locked.url, credentials=wrong, rules=[locked_rule]
                )
            ),
            metadata=AUTH,
        )

        await console.sign_in(admin_token=TOKEN)
        status, page = await console.get("/replication")
        assert status == 200, page
        rows = re.findall(r'<tr data-peer="([^"]+)">(.*?)</tr>', page, re.S)
        assert [name for name, _ in rows] == ["b", "locked"]
        assert "shop/* except shop/tmp tags v* (push)" in rows[0][1]
        assert "locked/* (push)" in rows[1][1]
        assert 'data-field="backlog">0<' in rows[0][1]

        # The live backlog: opened before the push, it follows the copy down to backlog 0.
        async with console.http.get(console.url + "/replication/status") as feed:
            assert feed.headers["Content-Type"].startswith("text/event-stream")
            first = await asyncio.wait_for(_status_until(feed, "b", "0 images"), 20)
            assert first[0]["failures"] == 0
            await oci_a.push_image("shop/app", make_image((5000, 7000), seed=64), "v1")
            await oci_a.push_image("locked/app", make_image((3000,), seed=65), "v1")
            seen = await asyncio.wait_for(_status_until(feed, "b", "1 images"), 30)
        assert seen[-1]["backlog"] == 0 and seen[-1]["in_flight"] == 0
        assert await _head(http, sites.b.url, "shop/app", "v1") == 200

        # The last hour: one minute with the copy, and its lag from the event.
        _, page = await console.get("/replication")
        chart = re.search(r'data-testid="chart-b">(.*?)</section>', page, re.S)
        assert chart, page
        bars = re.findall(r'<rect class="bar" [^>]*><title>([^<]+)</title>', chart.group(1))
        assert len(bars) >= 1 and all("KiB" in t or "MiB" in t for t in bars[:1]), bars
        summaries = re.findall(r'data-testid="chart-summary">([^<]+)<', chart.group(1))
        assert summaries[0].startswith("Last hour: 1 images, "), summaries
        assert "on average" in summaries[1] and "at worst" in summaries[1], summaries

        # The failure: its reason and kind, then a retry once the credentials are right.
        failure = await _until(console, "/replication", r'data-testid="failures".*?locked/app:v1')
        table = re.search(r'data-testid="failures".*?<tbody>(.*?)</tbody>', failure, re.S)
        assert table
        cells = re.findall(r"<td>(.*?)</td>", table.group(1), re.S)
        assert cells[:3] == ["locked", "push locked/app:v1", "peer-refused"], cells
        assert "401" in cells[3], cells
        failure_id = re.search(r'name="id" value="([^"]+)"', table.group(1))
        assert failure_id
        token = await console.csrf("/replication")
        status, page = await console.post(
            "/replication/retry", {"csrf_token": token, "peer": "locked", "id": failure_id.group(1)}
        )
        assert status == 200 and "Retried 1: 0 succeeded, 1 still failing" in page, page
        await api.UpdatePeer(
            plb.UpdatePeerRequest(
                peer=plb.Peer(
                    name="locked",
                    credentials=plb.Credentials(username=PEER_USER, password=PEER_PASSWORD),
                ),
                update_mask=FieldMask(paths=["credentials"]),
            ),
            metadata=AUTH,
        )
        status, page = await console.post(
            "/replication/retry", {"csrf_token": token, "peer": "locked", "id": failure_id.group(1)}
        )
        assert status == 200 and "Retried 1: 1 succeeded." in page, page
        assert re.search(r'data-testid="failures".*?No failures\.', page, re.S)

        # Where a manifest is: a HEAD at each peer through the replicator.
        assert await _replicated(console, "locked/app", "v1") == {
            "b": ("absent", "leave it out"),
            "locked": ("present", "select it"),
        }
        assert await _replicated(console, "shop/base", "v1") == {
            "b": ("absent", "select it"),
            "locked": ("absent", "leave it out"),
        }

        # A sync streamed as server-sent events: listing, then one message a tag, then done.
        assert await _head(http, sites.b.url, "shop/base", "v1") == 404
        async with console.http.post(
            console.url + "/replication/sync",
            data={"csrf_token": token, "peer": "b", "repository": ""},
            headers={"Accept": "text/event-stream"},
        ) as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            progress = [data async for kind, data in _events(stream) if kind == "progress"]
        assert progress and progress[-1]["finished"], progress
        last = progress[-1]
        assert (last["total"], last["done"], last["images_copied"], last["failed"]) == (3, 3, 2, 0)
        dones = [p["done"] for p in progress]
        assert dones == sorted(dones) and len(set(dones)) >= 3, dones
        copied = {(p["repository"], p["reference"]) for p in progress if p["reference"]}
        assert copied == {("shop/base", "v1"), ("shop/base", "v2"), ("shop/app", "v1")}
        for tag in old:
            assert await _head(http, sites.b.url, "shop/base", tag) == 200
        assert (await _replicated(console, "shop/base", "v1"))["b"] == ("present", "select it")

        # Without a script the form answers with a page, once the sync is done.
        status, page = await console.post(
            "/replication/sync", {"csrf_token": token, "peer": "b", "repository": "shop/base"}
        )
        assert status == 200
        result = re.search(r'data-testid="sync-result">([^<]+)<', page)
        assert result and result.group(1).startswith("0 images copied"), page
        assert re.search(r'<progress max="2" value="2">', page), page


async def test_every_page_reads_without_javascript(sites: Sites) -> None:
    """A plain HTTP client (no script runs) gets each page's content in its HTML; the forms
    answer with pages; the keyboard basics hold on every page."""
    console, api = sites.console, sites.api
    await api.CreatePeer(
        plb.CreatePeerRequest(peer=plb.Peer(name="b", url=sites.b.url, site="b")), metadata=AUTH
    )
    status, page = await console.get("/signin")
    assert status == 200
    assert_readable(page, "Sign in")
    await console.sign_in(admin_token=TOKEN)
    token = await console.csrf("/webhooks/new")
    status, page = await console.post(
        "/webhooks",
        {"csrf_token": token, "url": "http://127.0.0.1:9/hook", "actions": "push", "enabled": "on"},
    )
    assert status == 200
    assert_readable(page, "whsec_")
    hook = re.search(r'href="(/webhooks/[^"/]+)"', page.split("<main", 1)[1])
    assert hook
    async with aiohttp.ClientSession() as http:
        image = make_image((4000, 1000), seed=90)
        await OCIClient(http, sites.a.url).push_image("shop/readable", image, "v1")
    page = await _until(console, hook.group(1), r"<td>push shop/readable:v1</td>")
    row = [r for r in re.findall(r"<tr>.*?</tr>", page, re.S) if "shop/readable:v1" in r]
    delivery = re.search(r'href="(/deliveries/[^"]+)"', row[0])
    assert delivery
    # The record is listed from before its first attempt; wait for the attempt to be written.
    await _until(console, delivery.group(1), "no answer")

    digest = image.digest
    pages = {
        "/repositories": ["shop/readable", "1 repositor"],
        "/repository?name=shop/readable": ["v1", digest[:19], "linux/amd64"],
        "/manifest?repository=shop/readable&reference=v1": [digest, "Layers", "Replicated"],
        "/events": ["Events", "push shop/readable v1", "the live feed needs JavaScript"],
        "/webhooks": ["http://127.0.0.1:9/hook"],
        hook.group(1): ["http://127.0.0.1:9/hook", "Deliveries"],
        hook.group(1) + "/edit": ["Save"],
        "/webhooks/new": ["URL"],
        delivery.group(1): ["Attempts", "no answer"],
        "/replication": ["Peers", sites.b.url, "every repository, pushes", "Last hour"],
        "/gc": ["Garbage collection", "repositories"],
        "/health": ["registry (gRPC)", "notifier (gRPC)", "replicator (gRPC)"],
    }
    for path, texts in pages.items():
        status, page = await console.get(path)
        assert status == 200, (path, page[:500])
        assert_readable(page, *texts)
    status, page = await console.post("/gc", {"csrf_token": token, "mode": "dry-run"})
    assert status == 200
    assert_readable(page, "Dry run", "Would free")
    status, page = await console.post(
        "/replication/sync", {"csrf_token": token, "peer": "b", "repository": ""}
    )
    assert status == 200
    assert_readable(page, "Sync to b", "1 of 1 tags")


async def _replicated(console: Console, repository: str, tag: str) -> dict[str, tuple[str, str]]:
    status, page = await console.get(f"/manifest?repository={repository}&reference={tag}")
    assert status == 200, page
    table = re.search(r'data-testid="replicated".*?<tbody>(.*?)</tbody>', page, re.S)
    assert table, page
    found = {}
    for peer, row in re.findall(r'<tr data-peer="([^"]+)">(.*?)</tr>', table.group(1), re.S):
        has = re.search(r'class="(?:ok|muted|warn)">(\w+)<', row)
        rules = re.findall(r"<td>([^<]*)</td>", row)
        assert has and rules, row
        found[peer] = (has.group(1), rules[-1])
    return found


async def _head(http: aiohttp.ClientSession, base: str, repository: str, tag: str) -> int:
    accept = "application/vnd.oci.image.manifest.v1+json"
    url = f"{base}/v2/{repository}/manifests/{tag}"
    async with http.head(url, headers={"Accept": accept}) as response:
        return response.status


async def _until(console: Console, path: str, pattern: str, within: float = 30) -> str:
    deadline = time.monotonic() + within
    while True:
        _, page = await console.get(path)
        if re.search(pattern, page, re.S):
            return page
        assert time.monotonic() < deadline, f"{pattern!r} not on {path} within {within}s"
        await asyncio.sleep(0.3)
