"""Metrics tests: real services on loopback, each scraped over HTTP before and after an event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nimbus.oci.client import RegistryClient
from proto.nimbus.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.fixtures.images import Image
from tests.fixtures.registry import free_port
from tests.replicator.conftest import ReplicatorProcess


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    families: frozenset[str]

    def value(self, name: str, **labels: str) -> float:
        """The sample of exactly these labels; 0 when the series does not exist (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include these."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def has(self, name: str) -> bool:
        return name in self.families or any(n == name for n, _ in self.samples)


def parse(text: str) -> Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    families = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, frozenset(families))


async def scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, response.status
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await response.text())


async def until(check: Callable[[], Awaitable[Any]], within: float = 30.0) -> Any:
    """Run ``check`` until it stops raising AssertionError (or ``within`` seconds pass)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def push(client: RegistryClient, repository: str, tag: str, image: Image) -> None:
    for blob in image.blobs:
        await client.push_blob(repository, blob.data)
    await client.put_manifest(repository, tag, image.manifest.data, image.manifest.media_type)


def metrics_listen() -> tuple[str, str]:
    """A free loopback address for --metrics-listen, and its scrape URL."""
    address = f"127.0.0.1:{free_port()}"
    return address, f"http://{address}/metrics"


ReplicatorFactory = Callable[..., ReplicatorProcess]


@pytest.fixture
def replicators(tmp_path: Path) -> Iterator[ReplicatorFactory]:
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


@pytest.fixture
async def webhooks_api() -> AsyncIterator[Callable[[str], webhooks_pb2_grpc.WebhooksStub]]:
    channels: list[grpc.aio.Channel] = []

    def make(address: str) -> webhooks_pb2_grpc.WebhooksStub:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        return webhooks_pb2_grpc.WebhooksStub(channel)

    yield make
    for channel in channels:
        await channel.close()


async def add_webhook(
    stub: webhooks_pb2_grpc.WebhooksStub, url: str, tags: list[str]
) -> webhooks_pb2.Webhook:
    webhook = webhooks_pb2.Webhook(url=url, filter=webhooks_pb2.EventFilter(tags=tags))
    created: webhooks_pb2.Webhook = await stub.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(webhook=webhook)
    )
    return created
