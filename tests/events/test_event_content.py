"""What each action puts on the stream, field by field, for real skopeo pushes and pulls; and
the JSON form side by side with CNCF Distribution's own notifications for the same push."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import tests.fixtures.distribution as distribution_fixture
from nimbus import eventjson, streams
from nimbus.oci.client import RegistryClient
from tests.events.conftest import (
    EventRegistryFactory,
    Received,
    count_site_events,
    manifest_series,
    metric,
    read_events,
    skopeo_copy,
)
from tests.fixtures.distribution import DistributionFactory
from tests.fixtures.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    LayoutFactory,
    make_image,
    make_multiplatform,
)
from tests.fixtures.nats import NatsServer
from tests.fixtures.registry import RegistryProcess

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
BLOB = "application/octet-stream"


def check_common(got: Received, registry: RegistryProcess, site: str, method: str) -> None:
    """Fields every event carries, whatever the action."""
    event = got.event
    assert UUID.match(event.id), event.id
    assert got.msg_id == event.id
    assert got.subject == streams.subject(site, event.action)
    assert event.timestamp.seconds > 0
    assert event.request.id
    assert event.request.addr.startswith("127.0.0.1:")
    assert event.request.host == registry.host
    assert event.request.method == method
    assert event.actor.name == ""
    assert event.source.addr.endswith(f":{registry.port}")
    assert UUID.match(event.source.instance_id)
    assert event.source.site == site
    assert event.source.origin_site == site


def check_target(
    got: Received,
    registry: RegistryProcess,
    repository: str,
    digest: str,
    media_type: str,
    size: int,
    tag: str = "",
    kind: str = "manifests",
    from_repository: str = "",
) -> None:
    target = got.event.target
    assert target.repository == repository
    assert target.digest == digest
    assert target.media_type == media_type
    assert target.size == size
    assert target.length == size
    assert target.tag == tag
    assert target.url == f"{registry.url}/v2/{repository}/{kind}/{digest}"
    assert target.from_repository == from_repository


async def test_image_push_pull_mount_and_deletes(
    nats_server: NatsServer,
    events_registry: EventRegistryFactory,
    site: str,
    oci_layout_factory: LayoutFactory,
    tmp_path: Path,
) -> None:
    # Pulls on, to show that the HEADs of a push are not pulls.
    registry = events_registry(nats_server.url, "--pull-events")
    image = make_image((3000, 5000, 7000), seed=11)
    layout = oci_layout_factory({"v1": image})

    await skopeo_copy(layout.ref("v1"), f"docker://{registry.host}/team/web:v1")
    pushed = await read_events(nats_server.url, site, 5)
    assert [r.event.action for r in pushed] == ["push"] * 5
    # Layers may go up in parallel; the manifest is last, by tag.
    blob_events = {r.event.target.digest: r for r in pushed[:4]}
    assert set(blob_events) == {b.digest for b in image.blobs}
    for blob in image.blobs:
        got = blob_events[blob.digest]
        check_common(got, registry, site, "PUT")
        check_target(got, registry, "team/web", blob.digest, BLOB, blob.size, kind="blobs")
        assert got.event.request.useragent.startswith("skopeo/")
    manifest = pushed[4]
    check_common(manifest, registry, site, "PUT")
    check_target(
        manifest, registry, "team/web", image.digest, OCI_MANIFEST, image.manifest.size, "v1"
    )
    assert len({r.event.id for r in pushed}) == 5

    # A pull: the manifest GET by tag (blob GETs are not events).
    await skopeo_copy(f"docker://{registry.host}/team/web:v1", f"oci:{tmp_path / 'out'}:v1")
    events = await read_events(nats_server.url, site, 6)
    pull = events[5]
    assert pull.event.action == "pull"
    check_common(pull, registry, site, "GET")
    check_target(pull, registry, "team/web", image.digest, OCI_MANIFEST, image.manifest.size, "v1")

    async with RegistryClient(registry.url) as oci:
        layer = image.layers[0]
        assert await oci.mount_blob("team/other", layer.digest, "team/web") is None
        assert await oci.delete_manifest("team/web", "v1")
        assert await oci.delete_manifest("team/web", image.digest)
    events = await read_events(nats_server.url, site, 9)
    assert len(events) == 9
    mount, tag_delete, manifest_delete = events[6:]

    assert mount.event.action == "mount"
    check_common(mount, registry, site, "POST")
    check_target(
        mount,
        registry,
        "team/other",
        layer.digest,
        BLOB,
        layer.size,
        kind="blobs",
        from_repository="team/web",
    )

    # A tag delete names the tag and the manifest it pointed to.
    assert tag_delete.event.action == "delete"
    check_common(tag_delete, registry, site, "DELETE")
    check_target(
        tag_delete, registry, "team/web", image.digest, OCI_MANIFEST, image.manifest.size, "v1"
    )

    assert manifest_delete.event.action == "delete"
    check_common(manifest_delete, registry, site, "DELETE")
    check_target(
        manifest_delete, registry, "team/web", image.digest, OCI_MANIFEST, image.manifest.size
    )
    assert [r.seq for r in events] == sorted(r.seq for r in events)


async def test_index_push_without_blob_events(
    nats_server: NatsServer,
    events_registry: EventRegistryFactory,
    site: str,
    oci_layout_factory: LayoutFactory,
    tmp_path: Path,
) -> None:
    registry = events_registry(nats_server.url, "--no-blob-events")
    index = make_multiplatform((2000, 4000), seed=5)
    layout = oci_layout_factory({"multi": index})

    await skopeo_copy(layout.ref("multi"), f"docker://{registry.host}/team/multi:1.0", "--all")
    events = await read_events(nats_server.url, site, 3)
    assert len(events) == 3, [eventjson.to_dict(r.event) for r in events]
    children, top = events[:2], events[2]
    # One event per manifest: each platform's by digest, then the index by tag.
    assert {r.event.target.digest for r in children} == {i.digest for i in index.images}
    sizes = {i.digest: i.manifest.size for i in index.images}
    for got in children:
        assert got.event.action == "push"
        check_common(got, registry, site, "PUT")
        digest = got.event.target.digest
        check_target(got, registry, "team/multi", digest, OCI_MANIFEST, sizes[digest])
    assert top.event.action == "push"
    check_common(top, registry, site, "PUT")
    check_target(top, registry, "team/multi", index.digest, OCI_INDEX, index.manifest.size, "1.0")

    # Pulls are off by default: pulling the whole index adds nothing to the stream.
    await skopeo_copy(
        f"docker://{registry.host}/team/multi:1.0", f"oci:{tmp_path / 'out'}:1.0", "--all"
    )
    assert await count_site_events(nats_server.url, site) == 3


async def test_events_off_without_nats(registry: RegistryProcess) -> None:
    async with RegistryClient(registry.url) as oci:
        config = b"{}"
        await oci.push_blob("team/quiet", config)
        manifest = manifest_series(1, config, config)[0]
        await oci.put_manifest("team/quiet", "v1", manifest, OCI_MANIFEST)
    assert not (registry.data_dir / "_outbox").exists()
    assert metric(registry, "nimbus_events_published_total") == 0
    assert metric(registry, "nimbus_events_outboxed_total") == 0


def keys(doc: dict[str, Any], prefix: str = "") -> set[str]:
    found = set()
    for key, value in doc.items():
        found.add(prefix + key)
        if isinstance(value, dict):
            found |= keys(value, f"{prefix}{key}.")
    return found


NIMBUS_ONLY = {"source.site", "source.originSite"}


async def test_json_matches_distribution_notifications(
    nats_server: NatsServer,
    events_registry: EventRegistryFactory,
    site: str,
    oci_layout_factory: LayoutFactory,
    distribution_factory: DistributionFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same skopeo push to Distribution (notifications on) and to Nimbus: our JSON has
    every field Distribution's has, with the same values where they do not depend on the
    server, and adds only the site fields."""
    received: list[dict[str, Any]] = []

    async def collect(request: web.Request) -> web.Response:
        body = await request.json()
        received.extend(e for e in body["events"] if e["action"] == "push")
        assert request.headers["Content-Type"].startswith(eventjson.ENVELOPE_MEDIA_TYPE)
        return web.Response()

    app = web.Application()
    app.router.add_post("/events", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    receiver = web.TCPSite(runner, "127.0.0.1", 0)
    await receiver.start()
    port = runner.addresses[0][1]

    plain = distribution_fixture.distribution_config

    def with_notifications(
        root: Path, dist_port: int, tls: tuple[Path, Path] | None = None
    ) -> dict[str, object]:
        config = plain(root, dist_port, tls)
        config["notifications"] = {
            "endpoints": [
                {
                    "name": "nimbus-test",
                    "url": f"http://127.0.0.1:{port}/events",
                    "timeout": "2s",
                    "threshold": 3,
                    "backoff": "100ms",
                }
            ]
        }
        return config

    monkeypatch.setattr(distribution_fixture, "distribution_config", with_notifications)
    try:
        dist = distribution_factory()
        registry = events_registry(nats_server.url)
        image = make_image((1500, 2500), seed=21)
        layout = oci_layout_factory({"v1": image})
        await skopeo_copy(layout.ref("v1"), f"docker://{dist.host}/team/same:v1")
        await skopeo_copy(layout.ref("v1"), f"docker://{registry.host}/team/same:v1")

        theirs: dict[str, dict[str, Any]] = {}
        for _ in range(200):
            theirs = {e["target"]["digest"]: e for e in received}
            if image.digest in theirs and all(b.digest in theirs for b in image.blobs):
                break
            await asyncio.sleep(0.05)
        ours = {
            r.event.target.digest: eventjson.to_dict(r.event)
            for r in await read_events(nats_server.url, site, 4)
        }
    finally:
        await runner.cleanup()

    assert set(ours) == set(theirs) == {image.digest, *(b.digest for b in image.blobs)}
    for digest, their_event in theirs.items():
        our_event = ours[digest]
        # Distribution omits empty fields too (the tag of a blob push, an anonymous actor).
        missing = keys(their_event) - keys(our_event)
        assert not missing, (digest, missing, their_event)
        assert keys(our_event) - keys(their_event) <= NIMBUS_ONLY, our_event
        for field in ("action",):
            assert our_event[field] == their_event[field]
        for field in ("mediaType", "digest", "size", "length", "repository"):
            assert our_event["target"][field] == their_event["target"][field], field
        assert our_event["target"].get("tag") == their_event["target"].get("tag")
        for field in ("method", "useragent"):
            assert our_event["request"][field] == their_event["request"][field], field
        their_url = their_event["target"]["url"].replace(dist.host, "HOST")
        assert our_event["target"]["url"].replace(registry.host, "HOST") == their_url
        uuid.UUID(our_event["id"])
