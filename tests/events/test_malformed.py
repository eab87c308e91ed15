"""Messages on the stream that no consumer can act on: the notifier and the replicator drop each
one the same way (logged once, terminated, never redelivered) and go on with the next event.
And the target's kind, not its URL, tells the replicator a manifest from a blob. Real
nats-server, registries, notifier and replicator processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from nimbus import streams
from nimbus.oci.client import RegistryClient
from proto.nimbus.v1 import (
    events_pb2,
    replication_pb2,
    replication_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from tests.fixtures.images import Image, make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.notifier import NotifierFactory
from tests.fixtures.registry import RegistryFactory
from tests.notifier.receiver import Receiver
from tests.replicator.conftest import ReplicatorProcess

SITE = "a"
REPOSITORY = "team/app"
DROPPED = "unreadable message dropped"


def malformed() -> list[bytes]:
    """Garbage; a well-formed protobuf with an action no one knows; an event without a target.
    Each would be delivered or copied if it were read as an event: same repository and tag as
    the real push that follows."""
    unknown = events_pb2.Event(
        id=uuid.uuid4().hex,
        action="frobnicate",
        target=events_pb2.Target(
            media_type="application/vnd.oci.image.manifest.v1+json",
            digest="sha256:" + "ab" * 32,
            repository=REPOSITORY,
            url=f"http://127.0.0.1:1/v2/{REPOSITORY}/manifests/sha256:{'ab' * 32}",
            tag="v1",
        ),
        source=events_pb2.Source(site=SITE, origin_site=SITE),
    )
    targetless = events_pb2.Event(id=uuid.uuid4().hex, action="push")
    return [b"\x0a\xff garbage", unknown.SerializeToString(), targetless.SerializeToString()]


@pytest.fixture
def replicators(tmp_path: Path) -> Iterator[list[ReplicatorProcess]]:
    started: list[ReplicatorProcess] = []
    yield started
    for proc in started:
        proc.stop()


async def replicating(
    tmp_path: Path,
    nats_url: str,
    source_url: str,
    peer_url: str,
    replicators: list[ReplicatorProcess],
) -> ReplicatorProcess:
    """A replicator of SITE copying to peer `b`."""
    replicator = ReplicatorProcess(tmp_path, nats_url, source_url, SITE, [])
    replicators.append(replicator.start())
    async with grpc.aio.insecure_channel(replicator.address) as channel:
        await replication_pb2_grpc.ReplicationStub(channel).CreatePeer(
            replication_pb2.CreatePeerRequest(peer=replication_pb2.Peer(name="b", url=peer_url))
        )
    return replicator


async def push(url: str, repository: str, image: Image, tag: str = "v1") -> None:
    async with RegistryClient(url) as oci:
        for blob in image.blobs:
            await oci.push_blob(repository, blob.data)
        await oci.put_manifest(repository, tag, image.manifest.data, image.manifest.media_type)


async def reaches(url: str, repository: str, tag: str = "v1", within: float = 60) -> None:
    async with RegistryClient(url) as oci:
        deadline = time.monotonic() + within
        while await oci.head_manifest(repository, tag) is None:
            assert time.monotonic() < deadline, f"{repository}:{tag} did not reach {url}"
            await asyncio.sleep(0.2)


async def settled(js: JetStreamContext, consumer: str, seq: int, within: float = 60) -> None:
    """Until ``consumer`` has every message up to stream sequence ``seq`` off its hands."""
    deadline = time.monotonic() + within
    while True:
        info = await js.consumer_info(streams.EVENTS_STREAM, consumer)
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        if floor >= seq and not info.num_ack_pending:
            return
        assert time.monotonic() < deadline, f"{consumer}: settled up to {floor} of {seq}"
        await asyncio.sleep(0.1)


async def test_malformed_messages_are_dropped_once_by_notifier_and_replicator(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    notifier_factory: NotifierFactory,
    replicators: list[ReplicatorProcess],
    tmp_path: Path,
) -> None:
    server = nats_factory()
    source = registry_factory(["--nats", server.url, "--site", SITE, "--no-blob-events"])
    peer = registry_factory()
    nc = await nats.connect(server.url)
    receiver = await Receiver().start()
    try:
        js = nc.jetstream()
        notifier = notifier_factory(server.url)
        async with grpc.aio.insecure_channel(notifier.address) as channel:
            await webhooks_pb2_grpc.WebhooksStub(channel).CreateWebhook(
                webhooks_pb2.CreateWebhookRequest(
                    webhook=webhooks_pb2.Webhook(
                        url=receiver.url, filter=webhooks_pb2.EventFilter(tags=["v1"])
                    )
                )
            )
        replicator = await replicating(tmp_path, server.url, source.url, peer.url, replicators)
        consumers = [streams.NOTIFIER_CONSUMER, streams.replicator_consumer(SITE, "b")]

        async def consumers_exist() -> None:
            for name in consumers:
                await js.consumer_info(streams.EVENTS_STREAM, name)

        deadline = time.monotonic() + 30
        while True:
            try:
                await consumers_exist()
                break
            except NotFoundError:
                assert time.monotonic() < deadline, "consumers not created"
                await asyncio.sleep(0.1)

        for data in malformed():
            await js.publish(
                streams.subject(SITE, "push"),
                data,
                headers={streams.MSG_ID_HEADER: uuid.uuid4().hex},
            )
        # The next event, a real push, is still handled by both.
        image = make_image(seed=3)
        await push(source.url, REPOSITORY, image)
        (delivered,) = await receiver.wait_delivered(1)
        assert [e["target"]["digest"] for e in delivered.json()["events"]] == [image.digest]
        await reaches(peer.url, REPOSITORY)

        last = (await js.stream_info(streams.EVENTS_STREAM)).state.last_seq
        for name in consumers:
            await settled(js, name, last)
            info = await js.consumer_info(streams.EVENTS_STREAM, name)
            assert info.num_redelivered == 0, name
        assert len(receiver.delivered) == 1
        for proc in (notifier, replicator):
            assert proc.log_text().count(DROPPED) == 3, proc.log_text()[-3000:]
    finally:
        await receiver.stop()
        await nc.close()


async def test_a_repository_named_blobs_still_replicates(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicators: list[ReplicatorProcess],
    tmp_path: Path,
) -> None:
    """`x/blobs/app`'s manifest URL holds `/blobs/`: guessed from the URL, its pushes were taken
    for blob uploads and never copied; the event's kind says manifest."""
    server = nats_factory()
    source = registry_factory(["--nats", server.url, "--site", SITE])
    peer = registry_factory()
    await replicating(tmp_path, server.url, source.url, peer.url, replicators)
    await push(source.url, "x/blobs/app", make_image(seed=4))
    await reaches(peer.url, "x/blobs/app")
