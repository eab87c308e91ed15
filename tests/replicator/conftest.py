"""Fixtures of the replicator tests: pushing images with skopeo and checking them at peers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

from nimbus import streams
from nimbus.oci.client import RegistryClient
from proto.nimbus.v1 import events_pb2, replication_pb2, replication_pb2_grpc
from tests.fixtures.images import Image, ImageIndex, OCILayout
from tests.fixtures.process import ChildProcess
from tests.fixtures.registry import free_port


def skopeo_copy(layout: OCILayout, tag: str, host: str, repository: str) -> None:
    """`skopeo copy --all` of one tag of a layout to ``host/repository:tag``."""
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--all",
            "--quiet",
            "--dest-tls-verify=false",
            layout.ref(tag),
            f"docker://{host}/{repository}:{tag}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


async def push_image(client: RegistryClient, repository: str, tag: str, image: Image) -> None:
    """Push blobs, then the manifest by tag (fast, in process; skopeo where the client matters)."""
    for blob in image.blobs:
        await client.push_blob(repository, blob.data)
    await client.put_manifest(repository, tag, image.manifest.data, image.manifest.media_type)


async def push_by_digest(client: RegistryClient, repository: str, image: Image) -> None:
    for blob in image.blobs:
        await client.push_blob(repository, blob.data)
    await client.put_manifest(
        repository, image.digest, image.manifest.data, image.manifest.media_type
    )


def digests_of(item: Image | ImageIndex) -> list[str]:
    """Every manifest and blob digest of an image or index."""
    images = item.images if isinstance(item, ImageIndex) else (item,)
    found = [item.digest] if isinstance(item, ImageIndex) else []
    for image in images:
        found.append(image.digest)
        found.extend(blob.digest for blob in image.blobs)
    return found


async def assert_complete(
    client: RegistryClient, repository: str, tag: str, item: Image | ImageIndex
) -> None:
    """The tag resolves to the same digest and every manifest and blob is there, byte-equal."""
    head = await client.head_manifest(repository, tag)
    assert head is not None, f"{repository}:{tag} missing at {client.base_url}"
    assert head.digest == item.digest
    images = item.images if isinstance(item, ImageIndex) else (item,)
    for image in images:
        got = await client.get_manifest(repository, image.digest)
        assert got is not None and got.data == image.manifest.data
        for blob in image.blobs:
            assert await client.blob_size(repository, blob.digest) == blob.size


ClientFactory = Callable[..., RegistryClient]


@pytest.fixture
async def oci_client() -> AsyncIterator[ClientFactory]:
    """Opens RegistryClients for a test (``oci_client(url)``) and closes them at the end."""
    opened: list[RegistryClient] = []

    def make(url: str, **kwargs: Any) -> RegistryClient:
        client = RegistryClient(url, **kwargs)
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.close()


class ReplicatorProcess(ChildProcess):
    """`nimbus replicator` in a child process, with short ack wait and backoff for tests."""

    stop_timeout = 15.0

    def __init__(
        self, work_dir: Path, nats_url: str, registry_url: str, site: str, extra: list[str]
    ) -> None:
        self.grpc_port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "nimbus.cli",
            "replicator",
            "--nats",
            nats_url,
            "--site",
            site,
            "--registry",
            registry_url,
            "--grpc-listen",
            self.address,
            "--ack-wait",
            "3",
            "--retry-max",
            "1",
            *extra,
        ]
        super().__init__(work_dir / f"replicator-{site}-{self.grpc_port}.log")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> ReplicatorProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = self.spawn(self.args, {**os.environ, "NIMBUS_WORKER_RETRY_INITIAL": "0.1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"replicator exited: {self.log_text()[-2000:]}")
            if "replicator running" in self.log_text()[offset:]:
                return self
            time.sleep(0.05)
        raise TimeoutError("replicator did not start")


ReplicatorFactory = Callable[..., ReplicatorProcess]


@pytest.fixture
def replicator_factory(tmp_path: Path) -> Iterator[ReplicatorFactory]:
    started: list[ReplicatorProcess] = []

    def make(
        nats_url: str, registry_url: str, site: str, extra: list[str] | None = None
    ) -> ReplicatorProcess:
        proc = ReplicatorProcess(tmp_path, nats_url, registry_url, site, extra or [])
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.stop()


StubFactory = Callable[[str], replication_pb2_grpc.ReplicationStub]


@pytest.fixture
async def replication_api() -> AsyncIterator[StubFactory]:
    """``replication_api(address)``: a Replication stub; channels are closed at the end."""
    channels: list[grpc.aio.Channel] = []

    def make(address: str) -> replication_pb2_grpc.ReplicationStub:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        return replication_pb2_grpc.ReplicationStub(channel)

    yield make
    for channel in channels:
        await channel.close()


def peer(name: str, url: str, site: str = "", **rule: Any) -> replication_pb2.CreatePeerRequest:
    rules = [replication_pb2.Rule(**rule)] if rule else []
    return replication_pb2.CreatePeerRequest(
        peer=replication_pb2.Peer(name=name, url=url, site=site, rules=rules)
    )


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 60.0) -> Any:
    """Run ``check`` until it stops raising AssertionError (or ``within`` seconds pass)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


class EventLog:
    """Every event published for one site, read from the stream by a test-owned consumer."""

    def __init__(self) -> None:
        self.events: list[events_pb2.Event] = []
        self._nc: Any = None

    async def start(self, nats_url: str, site: str) -> EventLog:
        self._nc = await nats.connect(nats_url)
        js = self._nc.jetstream()

        async def on_msg(msg: Any) -> None:
            self.events.append(events_pb2.Event.FromString(msg.data))
            await msg.ack()

        await js.subscribe(
            streams.site_subjects(site),
            stream=streams.EVENTS_STREAM,
            cb=on_msg,
            ordered_consumer=True,
        )
        return self

    def manifest_pushes(self, repository: str, tag: str = "") -> list[events_pb2.Event]:
        return [
            e
            for e in self.events
            if e.action == "push"
            and e.target.repository == repository
            and e.target.media_type.endswith("+json")
            and (not tag or e.target.tag == tag)
        ]

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


@pytest.fixture
async def event_logs() -> AsyncIterator[Callable[[str, str], Awaitable[EventLog]]]:
    opened: list[EventLog] = []

    async def make(nats_url: str, site: str) -> EventLog:
        log = await EventLog().start(nats_url, site)
        opened.append(log)
        return log

    yield make
    for log in opened:
        await log.close()
