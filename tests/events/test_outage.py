"""The guarantee: an acknowledged push puts its event in the stream exactly once, in push order,
whether NATS was down, the registry was killed, or an outbox entry rotted on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from nimbus.oci.client import RegistryClient
from registry.events.outbox import HEADER, MAX_ENTRY, QUARANTINE, encode
from tests.events.conftest import (
    EventRegistryFactory,
    Received,
    count_site_events,
    manifest_series,
    metric,
    read_events,
    wait_for,
)
from tests.fixtures.nats import NatsFactory, NatsServer
from tests.fixtures.registry import RegistryProcess

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"layer-bytes" * 100
REPO = "team/app"


def outbox_dir(registry: RegistryProcess) -> Path:
    return registry.data_dir / "_outbox" / "worker-0"


def outbox_entries(registry: RegistryProcess) -> list[Path]:
    return sorted(outbox_dir(registry).glob("*.event"))


async def push_blobs(oci: RegistryClient) -> None:
    for data in (CONFIG, LAYER):
        await oci.push_blob(REPO, data)


async def outbox_drained(registry: RegistryProcess) -> None:
    await wait_for(
        lambda: (
            metric(registry, "nimbus_events_outbox_depth") == 0 and not outbox_entries(registry)
        ),
        what="the outbox to drain",
    )


def tags_of(events: list[Received]) -> list[str]:
    return [r.event.target.tag for r in events]


async def test_nats_down_during_100_pushes(
    nats_factory: NatsFactory, events_registry: EventRegistryFactory, site: str
) -> None:
    nats = nats_factory()
    registry = events_registry(nats.url, "--no-blob-events")
    manifests = manifest_series(100, CONFIG, LAYER)
    async with RegistryClient(registry.url) as oci:
        await push_blobs(oci)
        for i, manifest in enumerate(manifests):
            if i == 30:
                nats.stop()
            if i == 70:
                nats.start()
            if i == 85:
                # Back to publishing directly once the backlog is out.
                await outbox_drained(registry)
            await oci.put_manifest(REPO, f"t{i}", manifest, MANIFEST)

    await outbox_drained(registry)
    events = await read_events(nats.url, site, 100)
    assert tags_of(events) == [f"t{i}" for i in range(100)]
    assert len({r.event.id for r in events}) == 100
    assert await count_site_events(nats.url, site) == 100
    # The outage really went through the outbox, and the end again direct.
    assert metric(registry, "nimbus_events_outboxed_total") >= 40
    assert metric(registry, 'nimbus_events_published_total{action="push",path="direct"}') >= 44


async def test_registry_killed_while_nats_down(
    nats_factory: NatsFactory, events_registry: EventRegistryFactory, site: str
) -> None:
    nats = nats_factory()
    registry = events_registry(nats.url, "--no-blob-events")
    manifests = manifest_series(20, CONFIG, LAYER)
    async with RegistryClient(registry.url) as oci:
        await push_blobs(oci)
        nats.stop()
        for i, manifest in enumerate(manifests):
            await oci.put_manifest(REPO, f"t{i}", manifest, MANIFEST)
    # Every push was acknowledged; no chance to flush or shut down cleanly.
    registry.kill()
    saved = outbox_dir(registry).parent / "saved"
    saved.mkdir()
    for entry in outbox_entries(registry):
        shutil.copy2(entry, saved / entry.name)
    assert len(list(saved.iterdir())) == 20

    nats.start()
    registry.start()
    await outbox_drained(registry)
    events = await read_events(nats.url, site, 20)
    assert tags_of(events) == [f"t{i}" for i in range(20)]

    # A crash after publishing but before the entries were removed: the same entries are
    # published again on restart, and JetStream keeps one copy of each.
    registry.kill()
    for entry in saved.iterdir():
        shutil.copy2(entry, outbox_dir(registry) / entry.name)
    registry.start()
    await outbox_drained(registry)
    assert metric(registry, 'nimbus_events_published_total{action="push",path="outbox"}') == 20
    assert await count_site_events(nats.url, site) == 20
    assert tags_of(await read_events(nats.url, site, 20)) == [f"t{i}" for i in range(20)]


async def test_unreadable_outbox_entries_are_skipped(
    nats_factory: NatsFactory, events_registry: EventRegistryFactory, site: str
) -> None:
    nats = nats_factory()
    registry = events_registry(nats.url, "--no-blob-events")
    async with RegistryClient(registry.url) as oci:
        await push_blobs(oci)
        nats.stop()
        for i, manifest in enumerate(manifest_series(5, CONFIG, LAYER)):
            await oci.put_manifest(REPO, f"t{i}", manifest, MANIFEST)
    registry.stop()

    entries = outbox_entries(registry)
    assert len(entries) == 5
    # Disk rot: a flipped byte, an absurd length, and a well-framed payload that is no event.
    flipped = bytearray(entries[1].read_bytes())
    flipped[-3] ^= 0xFF
    entries[1].write_bytes(bytes(flipped))
    entries[2].write_bytes(HEADER.pack(b"NBX1", MAX_ENTRY * 64, 0) + b"x" * 100)
    entries[3].write_bytes(encode(b"\xff\xff\xff\xff not a protobuf"))

    nats.start()
    registry.start()
    await outbox_drained(registry)
    events = await read_events(nats.url, site, 2)
    assert tags_of(events) == ["t0", "t4"]
    assert metric(registry, "nimbus_events_outbox_skipped_total") == 3
    assert len(list((outbox_dir(registry) / QUARANTINE).iterdir())) == 3
    assert registry.log_text().count("unreadable outbox entry skipped") == 3
    # Still serving, still publishing.
    async with RegistryClient(registry.url) as oci:
        await oci.put_manifest(REPO, "after", manifest_series(6, CONFIG, LAYER)[5], MANIFEST)
    events = await read_events(nats.url, site, 3)
    assert tags_of(events) == ["t0", "t4", "after"]


async def test_frozen_nats_never_holds_a_push(
    nats_factory: NatsFactory, events_registry: EventRegistryFactory, site: str
) -> None:
    """NATS accepts the connection but answers nothing: pushes still complete (they wait at
    most the publish timeout), and their events follow once NATS answers again."""
    nats = nats_factory()
    registry = events_registry(nats.url, "--no-blob-events", "--publish-timeout", "0.2")
    async with RegistryClient(registry.url) as oci:
        await push_blobs(oci)
        nats.pause()
        try:
            for i, manifest in enumerate(manifest_series(5, CONFIG, LAYER)):
                await oci.put_manifest(REPO, f"t{i}", manifest, MANIFEST)
            assert metric(registry, "nimbus_events_outboxed_total") == 5
            # Frozen long enough that flushing, and then checking the stream, time out too.
            await wait_for(
                lambda: "cannot create or update the event stream" in registry.log_text(),
                what="the stream check to time out",
            )
        finally:
            nats.resume()
    await outbox_drained(registry)
    events = await read_events(nats.url, site, 5)
    assert tags_of(events) == [f"t{i}" for i in range(5)]


async def test_registry_starts_before_nats(
    tmp_path: Path, events_registry: EventRegistryFactory, site: str
) -> None:
    """NATS not there at all when the registry starts: it serves, keeps events, and publishes
    them (creating the stream) once NATS comes up."""
    nats = NatsServer(tmp_path / "late-nats" / "store")
    registry = events_registry(nats.url, "--no-blob-events")
    try:
        async with RegistryClient(registry.url) as oci:
            await push_blobs(oci)
            for i, manifest in enumerate(manifest_series(3, CONFIG, LAYER)):
                await oci.put_manifest(REPO, f"t{i}", manifest, MANIFEST)
        assert metric(registry, "nimbus_events_outboxed_total") == 3
        nats.start()
        await outbox_drained(registry)
        events = await read_events(nats.url, site, 3)
        assert tags_of(events) == ["t0", "t1", "t2"]
    finally:
        nats.stop()
