"""An outbox left by a worker that no longer runs (the worker count was reduced) is adopted:
its events reach the stream, once each."""

from __future__ import annotations

from pathlib import Path

from nimbus.oci.client import RegistryClient
from tests.events.conftest import (
    EventRegistryFactory,
    count_site_events,
    manifest_series,
    read_events,
    wait_for,
)
from tests.fixtures.nats import NatsFactory

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"adopted-layer" * 50
REPO = "team/adopted"
PUSHES = 40
MAX_PUSHES = 400


def entries(outbox: Path) -> list[Path]:
    return sorted(outbox.glob("*.event"))


async def test_outbox_of_a_removed_worker_is_flushed_once(
    nats_factory: NatsFactory, events_registry: EventRegistryFactory, site: str
) -> None:
    nats = nats_factory()
    nats.stop()  # down from the start: every event of the two workers goes to an outbox
    registry = events_registry(nats.url, "--no-blob-events", "--workers", "2")
    root = registry.data_dir / "_outbox"
    async with RegistryClient(registry.url) as oci:
        for data in (CONFIG, LAYER):
            await oci.push_blob(REPO, data)
    pushed = 0
    for i, manifest in enumerate(manifest_series(MAX_PUSHES, CONFIG, LAYER)):
        # A connection per push, so the kernel spreads them over both workers; it may favour
        # one for a while, so go on until both have an outbox entry.
        async with RegistryClient(registry.url) as oci:
            await oci.put_manifest(REPO, f"t{i}", manifest, MANIFEST)
        pushed += 1
        if pushed >= PUSHES and all(entries(root / w) for w in ("worker-0", "worker-1")):
            break
    registry.stop()
    left = {name: len(entries(root / name)) for name in ("worker-0", "worker-1")}
    assert left["worker-0"] > 0 and left["worker-1"] > 0, left
    assert sum(left.values()) == pushed, left

    # Back with one worker and NATS: worker-1's outbox has no worker of its own any more.
    nats.start()
    registry.extra_args = ["--nats", nats.url, "--site", site, "--no-blob-events"]
    registry.start()
    await wait_for(
        lambda: not entries(root / "worker-0") and not entries(root / "worker-1"),
        within=60,
        what="both outboxes to drain",
    )
    events = await read_events(nats.url, site, pushed)
    tags = sorted(r.event.target.tag for r in events)
    assert tags == sorted(f"t{i}" for i in range(pushed))
    assert await count_site_events(nats.url, site) == pushed
    assert "adopting the outbox of a worker that no longer runs" in registry.log_text()
