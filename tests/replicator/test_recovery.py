"""Replication through outages: a peer down, a replicator killed mid-copy, a late peer synced."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from proto.nimbus.v1 import replication_pb2
from tests.fixtures.distribution import DistributionFactory
from tests.fixtures.images import Blob, Image, canonical_json, make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.registry import RegistryFactory
from tests.replicator.conftest import (
    ClientFactory,
    ReplicatorFactory,
    StubFactory,
    assert_complete,
    eventually,
    peer,
    push_image,
)
from tests.replicator.test_replication import idle


async def test_peer_down_for_50_pushes_gets_all_in_order_and_others_are_not_held_back(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    distribution_factory: DistributionFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_client: ClientFactory,
    event_logs,
) -> None:
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    b = registry_factory(["--nats", nats_url, "--site", "b"])
    dist = distribution_factory()
    api = replication_api(replicator_factory(nats_url, a.url, "a").address)
    await api.CreatePeer(peer("b", b.url, site="b"))
    await api.CreatePeer(peer("dist", dist.url))
    events_b = await event_logs(nats_url, "b")

    b.stop()
    source = oci_client(a.url)
    images = {f"t{i:02d}": make_image((300,), seed=100 + i) for i in range(50)}
    for tag, image in images.items():
        await push_image(source, "outage/app", tag, image)

    # The dead peer does not hold back the live one.
    to_dist = oci_client(dist.url)

    async def at_dist() -> None:
        for tag, image in images.items():
            await assert_complete(to_dist, "outage/app", tag, image)

    await eventually(at_dist)
    status = await api.GetStatus(replication_pb2.GetStatusRequest(peer="b"))
    assert status.peers[0].backlog + status.peers[0].in_flight > 0
    assert "b" not in [s.peer for s in status.peers if s.last_error_reason == ""]

    b.start()
    to_b = oci_client(b.url)

    async def at_b() -> None:
        for tag, image in images.items():
            await assert_complete(to_b, "outage/app", tag, image)
        await idle(api)

    await eventually(at_b, within=90)
    tags_in_order = [e.target.tag for e in events_b.manifest_pushes("outage/app")]
    assert tags_in_order == list(images)
    assert (await api.GetStatus(replication_pb2.GetStatusRequest(peer="b"))).peers[0].failures == 0


def raw_image(layer_size: int, seed: int) -> Image:
    """An image whose one layer is raw random bytes (no gzip): quick to make at any size."""
    layer = Blob("application/vnd.oci.image.layer.v1.tar", os.urandom(layer_size))
    config = Blob(
        "application/vnd.oci.image.config.v1+json",
        canonical_json({"architecture": "amd64", "os": "linux", "seed": seed}),
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    return Image(config, (layer,), Blob(doc["mediaType"], canonical_json(doc)))


async def test_replicator_killed_mid_layer_resumes_and_never_exposes_a_partial_tag(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_client: ClientFactory,
) -> None:
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    b = registry_factory()
    rep = replicator_factory(nats_url, a.url, "a")
    api = replication_api(rep.address)
    await api.CreatePeer(peer("b", b.url))
    image = raw_image(256 * 1024 * 1024, seed=7)
    big = image.layers[0]

    to_b = oci_client(b.url)
    seen_tag = 0
    violations: list[str] = []
    stop = asyncio.Event()

    async def watch_peer() -> None:
        """Whenever B serves the tag, everything it references must be there."""
        nonlocal seen_tag
        while not stop.is_set():
            head = await to_b.head_manifest("big/app", "v1")
            if head is not None:
                seen_tag += 1
                for blob in image.blobs:
                    if await to_b.blob_size("big/app", blob.digest) != blob.size:
                        violations.append(f"tag served without {blob.digest}")
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch_peer())
    await push_image(oci_client(a.url), "big/app", "v1", image)

    # Kill the replicator while the large layer is on its way.
    def copying() -> bool:
        return any(
            json.loads(line).get("digest") == big.digest
            for line in rep.log_text().splitlines()
            if "blob copy started" in line
        )

    while not copying():  # noqa: ASYNC110 -- polling another process's log
        await asyncio.sleep(0.01)
    rep.kill()
    assert await to_b.head_manifest("big/app", "v1") is None
    rep.start()

    try:
        await eventually(lambda: assert_complete(to_b, "big/app", "v1", image), within=90)
        got = await to_b.get_blob("big/app", image.config.digest)
        assert got == image.config.data
    finally:
        stop.set()
        await watcher
    assert violations == []
    assert seen_tag > 0
    # The 256 MiB layer streamed through: never held whole in the replicator's memory.
    assert rep.peak_rss_kib() < 200 * 1024


SYNC_ARGS = ["peers", "sync", "late"]


async def test_sync_backfills_a_peer_added_after_20_pushes(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    distribution_factory: DistributionFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_client: ClientFactory,
) -> None:
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    dist = distribution_factory()
    rep = replicator_factory(nats_url, a.url, "a")
    source = oci_client(a.url)
    images = {(f"late/app{i % 4}", f"v{i}"): make_image((400,), seed=200 + i) for i in range(20)}
    for (repository, tag), image in images.items():
        await push_image(source, repository, tag, image)

    api = replication_api(rep.address)
    await api.CreatePeer(peer("late", dist.url))
    # Through the command line, as an operator would.
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nimbus.cli", "ctl", "--replicator", rep.address, *SYNC_ARGS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "synced 20 tags to late: 20 copied" in result.stdout
    assert "[##############################] 20/20" in result.stdout
    to_dist = oci_client(dist.url)
    for (repository, tag), image in images.items():
        await assert_complete(to_dist, repository, tag, image)

    # A second sync finds nothing to do.
    again = [p async for p in api.Sync(replication_pb2.SyncRequest(peer="late"))]
    assert again[-1].finished and again[-1].total == 20 and again[-1].images_copied == 0


async def test_periodic_reconcile_catches_what_no_event_carried(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_client: ClientFactory,
) -> None:
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    b = registry_factory()
    rep = replicator_factory(nats_url, a.url, "a")
    before = {f"v{i}": make_image((500,), seed=300 + i) for i in range(3)}
    for tag, image in before.items():
        await push_image(oci_client(a.url), "old/app", tag, image)
    # Added after the pushes, and never synced by hand: the reconcile loop finds them.
    request = peer("b", b.url)
    request.peer.reconcile_interval_seconds = 1
    await replication_api(rep.address).CreatePeer(request)
    to_b = oci_client(b.url)

    async def reconciled() -> None:
        for tag, image in before.items():
            await assert_complete(to_b, "old/app", tag, image)

    await eventually(reconciled)
    assert '"msg": "reconciled"' in rep.log_text()
