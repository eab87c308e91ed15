"""On a real NATS: a retention run publishes exactly one delete event per tag and per
manifest it deletes (the same event a client's DELETE makes), and a scrub that quarantines a
corrupt blob publishes nothing at all."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp

from proto.nimbus.v1 import registry_pb2 as pb
from tests.events.conftest import Received, read_events
from tests.fixtures.images import make_image
from tests.lifecycle.conftest import LifecycleRegistry, admin, oci

REPO = "ev/app"


async def _events_until(nats_url: str, site: str, enough, within: float = 60) -> list[Received]:
    """The site's events once ``enough`` of them says so (read again until then)."""
    deadline = time.monotonic() + within
    while True:
        got = await read_events(nats_url, site, expected=1, within=5)
        if enough(got):
            return got
        assert time.monotonic() < deadline, [(e.event.action, e.event.target.tag) for e in got]
        await asyncio.sleep(0.2)


def _deletes(events: list[Received]) -> list[tuple[str, str, str]]:
    return sorted(
        (e.event.target.repository, e.event.target.tag, e.event.target.digest)
        for e in events
        if e.event.action == "delete"
    )


async def test_one_delete_event_per_deletion_and_none_from_a_scrub(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession, nats_url: str
):
    site = f"t{uuid.uuid4().hex[:10]}"
    registry = lifecycle_registry(extra_args=["--nats", nats_url, "--site", site])
    client = oci(http, registry)
    images = [make_image((400,), seed=1000 + i) for i in range(5)]
    for i, image in enumerate(images):
        await client.push_image(REPO, image, f"t{i}")
    untagged = make_image((400,), seed=1100)
    await client.push_image(REPO, untagged)  # by digest: never tagged
    # A tag of another repository outside the rule's glob.
    await client.push_image("keep/app", images[0], "t0")

    rule = pb.RetentionRule(
        name="two", repositories="ev/*", keep_last=2, untagged_older_than={"seconds": 0}
    )
    async with admin(registry) as stub:
        await stub.SetLifecyclePolicies(
            pb.SetLifecyclePoliciesRequest(policies=pb.LifecyclePolicies(retention=[rule]))
        )
        progress = [p async for p in stub.RunRetention(pb.RunRetentionRequest())]
    items = [p.item for p in progress if p.HasField("item")]
    tags = {(REPO, i.tag, i.digest) for i in items if i.kind == pb.RetentionItem.TAG}
    manifests = {(REPO, "", i.digest) for i in items if i.kind == pb.RetentionItem.MANIFEST}
    # Three tags beyond the newest two; their manifests and the untagged one, untagged now.
    assert len(tags) == 3 and len(manifests) == 4, items
    assert {d for _, _, d in manifests} == {d for _, _, d in tags} | {untagged.digest}
    expected = sorted(tags | manifests)

    events = await _events_until(nats_url, site, lambda got: len(_deletes(got)) >= 7)
    # Exactly one each: no more come on a second look.
    assert _deletes(events) == expected
    assert _deletes(await read_events(nats_url, site, expected=len(events))) == expected
    for e in events:
        if e.event.action == "delete":
            assert e.event.request.method == "DELETE"

    # A scrub that quarantines a blob publishes nothing: the next event is a marker push.
    victim = images[4].layers[0]
    hex_part = victim.digest.split(":")[1]
    path = Path(registry.data_dir) / "blobs" / "sha256" / hex_part[:2] / hex_part / "data"
    path.write_bytes(b"\0" * len(victim.data))
    async with admin(registry) as stub:
        scrub = [p async for p in stub.RunScrub(pb.RunScrubRequest(unlimited=True))]
    assert scrub[-1].stats.quarantined == 1
    before = len(events)
    marker = make_image((100,), seed=1200)
    await client.push_image("marker/app", marker, "m")

    def marker_seen(got: list[Received]) -> bool:
        return any(e.event.target.repository == "marker/app" for e in got)

    after = await _events_until(nats_url, site, marker_seen)
    new = after[before:]
    assert {e.event.target.repository for e in new} == {"marker/app"}, [
        (e.event.action, e.event.target.repository) for e in new
    ]
