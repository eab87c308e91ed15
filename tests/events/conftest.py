"""Helpers of the event tests: registries publishing to a real nats-server and a stream reader.

Pushes by HTTP where skopeo would be slow go through `nimbus.oci.client.RegistryClient`."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from nimbus import streams
from proto.nimbus.v1 import events_pb2
from tests.fixtures.registry import RegistryFactory, RegistryProcess


@dataclass
class Received:
    seq: int
    subject: str
    msg_id: str
    event: events_pb2.Event


async def read_events(
    nats_url: str, site: str, expected: int, within: float = 30
) -> list[Received]:
    """Every event of ``site`` in stream order, once ``expected`` of them are there; then one
    more look to catch any extra copy."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            streams.site_subjects(site),
            stream=streams.EVENTS_STREAM,
        )
        got: list[Received] = []
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(max(1, expected + 1 - len(got)), timeout=0.5)
            except TimeoutError:  # nats-py raises its own subclass or the plain one
                if len(got) >= expected:
                    break
                continue
            for m in msgs:
                got.append(
                    Received(
                        m.metadata.sequence.stream,
                        m.subject,
                        (m.headers or {}).get(streams.MSG_ID_HEADER, ""),
                        events_pb2.Event.FromString(m.data),
                    )
                )
                await m.ack()
        await sub.unsubscribe()
        return got
    finally:
        await nc.close()


async def count_site_events(nats_url: str, site: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(
            streams.EVENTS_STREAM, subjects_filter=streams.site_subjects(site)
        )
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


def metric(registry: RegistryProcess, name: str) -> float:
    """Sum of a metric's samples on /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"{registry.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"^{re.escape(name)}(\{{.*\}})? ", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_for(predicate: Callable[[], bool], within: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.1)


async def skopeo_copy(src: str, dest: str, *extra: str) -> None:
    """A real client; run off the event loop so servers in this process keep answering."""
    proc = await asyncio.create_subprocess_exec(
        "skopeo",
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        *extra,
        src,
        dest,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, output.decode(errors="replace")


@pytest.fixture
def site() -> str:
    """A site name of this test alone: tests share the session's stream and filter by site."""
    return f"t{uuid.uuid4().hex[:10]}"


EventRegistryFactory = Callable[..., RegistryProcess]


@pytest.fixture
def events_registry(registry_factory: RegistryFactory, site: str) -> EventRegistryFactory:
    """A registry publishing to ``nats_url`` as this test's site."""

    def make(
        nats_url: str,
        *extra: str,
        data_dir: Path | None = None,
    ) -> RegistryProcess:
        return registry_factory(
            extra_args=["--nats", nats_url, "--site", site, *extra], data_dir=data_dir
        )

    return make


def manifest_series(count: int, config: bytes, layer: bytes) -> list[bytes]:
    """``count`` distinct small image manifests over the same config and layer."""
    from hashlib import sha256

    def desc(media_type: str, data: bytes) -> dict[str, object]:
        return {
            "mediaType": media_type,
            "digest": "sha256:" + sha256(data).hexdigest(),
            "size": len(data),
        }

    return [
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": desc("application/vnd.oci.image.config.v1+json", config),
                "layers": [desc("application/vnd.oci.image.layer.v1.tar", layer)],
                "annotations": {"n": str(i)},
            },
            separators=(",", ":"),
        ).encode()
        for i in range(count)
    ]
