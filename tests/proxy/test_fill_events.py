"""A cache fill is an event on a real NATS: a cold pull of a multi-platform image publishes one
`fill` event per manifest stored (naming the upstream), a warm pull none; its JSON form is
Distribution's event shape with action "fill" and the Nimbus field `target.upstream`."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest

from nimbus import eventjson, streams
from nimbus.events import MANIFEST, Action
from tests.events.conftest import count_site_events, read_events
from tests.fixtures.images import OCI_INDEX, LayoutFactory, make_multiplatform
from tests.proxy.conftest import PREFIX, CacheFactory, Upstream, pull, push

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


async def test_a_cold_pull_publishes_one_fill_per_manifest(
    upstream: Upstream,
    cache_factory: CacheFactory,
    oci_layout_factory: LayoutFactory,
    nats_url: str,
    tmp_path: Path,
) -> None:
    index = make_multiplatform((20_000,), seed=500)
    push(oci_layout_factory({"1": index}), "1", upstream.registry.host, "team/multi:1", "--all")
    site = f"fill-{uuid.uuid4().hex[:8]}"
    cache = cache_factory(
        [{"name": "dist", "url": upstream.url, "prefix": PREFIX}],
        extra_args=["--nats", nats_url, "--site", site],
    )
    name = f"{PREFIX}/team/multi"
    pull(cache.host, f"{name}:1", tmp_path / "cold", "--all")
    manifests = {index.manifest.digest, *(image.digest for image in index.images)}
    got = await read_events(nats_url, site, len(manifests))
    assert sorted(r.event.target.digest for r in got) == sorted(manifests)
    for received in got:
        event = received.event
        assert received.subject == streams.subject(site, "fill")
        assert event.action == Action.FILL
        assert event.target.kind == MANIFEST
        assert (event.target.repository, event.target.upstream) == (name, "dist")
        assert event.target.url.endswith(f"/v2/{name}/manifests/{event.target.digest}")
    [top] = [r.event for r in got if r.event.target.digest == index.manifest.digest]
    assert top.target.tag == "1" and top.target.media_type == OCI_INDEX
    assert top.target.size == index.manifest.size
    doc = eventjson.to_dict(top)
    assert doc["action"] == "fill" and doc["target"]["upstream"] == "dist"
    assert doc["target"]["length"] == index.manifest.size

    # Warm: served from the cache, nothing more published.
    pull(cache.host, f"{name}:1", tmp_path / "warm", "--all")
    await asyncio.sleep(1)
    assert await count_site_events(nats_url, site) == len(manifests)
