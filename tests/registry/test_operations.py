"""Operations: Prometheus metrics, the JSON access log with request ids, configuration errors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.images import make_image
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient


def _sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format (0 when absent)."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_bytes_and_uploads(client: OCIClient, repo: str) -> None:
    before = (await client.request("GET", "/metrics")).body.decode()
    image = make_image((4096, 8192), seed=90)
    await client.push_image(repo, image, "v1")
    assert (await client.manifest(repo, "v1")).status == 200
    after = (await client.request("GET", "/metrics")).body.decode()

    def grew(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert grew("nimbus_http_requests_total", route="manifest_put", status="201") == 1
    assert grew("nimbus_http_requests_total", route="manifest_get", status="200") == 1
    # Blobs pushed: the config and two layers, each through an upload that completed.
    assert grew("nimbus_blob_upload_duration_seconds_count") == 3
    assert grew("nimbus_http_bytes_received_total") >= 4096 + 8192
    assert grew("nimbus_http_bytes_sent_total") >= len(image.manifest.data)


async def test_access_log_is_json_with_the_request_id(
    client: OCIClient, module_registry: RegistryProcess, repo: str
) -> None:
    given = "req-given-by-client-1"
    reply = await client.request("GET", f"/v2/{repo}/tags/list", headers={"X-Request-Id": given})
    assert reply.headers["X-Request-Id"] == given
    generated = (await client.request("GET", "/v2/")).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{12,}", generated)

    deadline = time.monotonic() + 10
    entries: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline and not {given, generated} <= entries.keys():
        for line in module_registry.log_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("msg") == "request":
                    entries[str(entry["request_id"])] = entry
        await asyncio.sleep(0.05)
    assert entries[given]["status"] == 404
    assert entries[given]["path"] == f"/v2/{repo}/tags/list"
    assert entries[given]["method"] == "GET"
    assert entries[generated]["status"] == 200


def _start_refused(args: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "nimbus.cli", "registry", "--grpc-listen", "", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_configuration_errors_name_the_key_and_its_source(tmp_path: Path) -> None:
    assert "workers: must be at least 1" in _start_refused(["--workers", "0"])
    assert "expected HOST:PORT" in _start_refused(["--listen", "nowhere"])
    config = tmp_path / "registry.yaml"
    config.write_text("listen: 127.0.0.1:0\nno_such_setting: 1\n")
    message = _start_refused(["--config", str(config)])
    assert "no_such_setting" in message and str(config) in message and "unknown" in message
    message = _start_refused([], env={"NIMBUS_CATALOG_PAGE_SIZE": "many"})
    assert "catalog_page_size" in message and "environment" in message
    config.write_text("events: [not, a, section]\n")
    assert "expected a section" in _start_refused(["--config", str(config)])


async def test_workers_share_the_port_and_read_their_own_writes(registry_factory) -> None:
    """With several processes on one port, a read right after a retag sees the new digest."""
    import aiohttp

    reg = registry_factory(extra_args=["--workers", "2"])
    first, second = make_image((64,), seed=91), make_image((64,), seed=92)
    # A new connection per request, so the kernel spreads them over both workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        client = OCIClient(http, reg.url)
        await client.push_image("workers/app", first, "one")
        await client.push_image("workers/app", second, "two")
        workers = set()
        # The kernel may send a long run of connections to one worker: go on
        # (bounded) until both have answered reads, at least 40 rounds.
        i = 0
        while i < 40 or (len(workers) < 2 and i < 2000):
            image = (first, second)[i % 2]
            reply = await client.put_manifest("workers/app", "latest", image.manifest)
            assert reply.status == 201
            got = await client.manifest("workers/app", "latest")
            assert got.headers["Docker-Content-Digest"] == image.digest, f"stale read at {i}"
            # Request ids start with a prefix each process draws at random.
            workers.add(got.headers["X-Request-Id"][:12])
            i += 1
    assert len(workers) == 2, "one worker answered everything: the test proved nothing"
