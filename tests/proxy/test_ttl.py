"""A cached tag is served from the cache while younger than its TTL, then revalidated upstream
with one HEAD; a retag at the upstream shows once the TTL is over."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.fixtures.images import OCI_MANIFEST, LayoutFactory, make_image
from tests.proxy.conftest import PREFIX, CacheFactory, Upstream, http, push

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")

TTL = 3.0


def test_retag_upstream_shows_after_the_ttl_with_one_head(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    old, new = make_image((2048,), seed=140), make_image((2048,), seed=141)
    push(oci_layout_factory({"1": old}), "1", upstream.registry.host, "team/app:1")
    cache = cache_factory([{"name": "dist", "url": upstream.url, "prefix": PREFIX, "tag_ttl": TTL}])
    url = f"{cache.url}/v2/{PREFIX}/team/app/manifests/1"
    first = http(url, accept=OCI_MANIFEST)
    fetched_at = time.monotonic()
    assert first.headers["Docker-Content-Digest"] == old.digest

    push(oci_layout_factory({"1": new}), "1", upstream.registry.host, "team/app:1")
    before = upstream.proxy.counts()
    within = http(url, accept=OCI_MANIFEST)
    if time.monotonic() - fetched_at < TTL:  # a slow machine may be past the TTL already
        assert within.headers["Docker-Content-Digest"] == old.digest
        assert upstream.proxy.counts() == before  # nothing asked upstream

    time.sleep(max(0.0, TTL - (time.monotonic() - fetched_at)) + 0.5)
    heads = upstream.proxy.count("HEAD", "/manifests/1")
    after = http(url, accept=OCI_MANIFEST)
    assert after.status == 200
    assert after.headers["Docker-Content-Digest"] == new.digest
    assert after.body == new.manifest.data
    assert upstream.proxy.count("HEAD", "/manifests/1") == heads + 1
    # The new manifest by its digest, once; the tag itself is not fetched again by GET.
    assert upstream.proxy.count("GET", f"/manifests/{new.digest}") == 1
    assert upstream.proxy.count("GET", "/manifests/1") == 1

    # Fresh again: served from the cache without asking.
    before = upstream.proxy.counts()
    again = http(url, accept=OCI_MANIFEST)
    assert again.headers["Docker-Content-Digest"] == new.digest
    if upstream.proxy.counts() != before:
        # Only when this machine took longer than the TTL between the two requests.
        assert upstream.proxy.count("HEAD", "/manifests/1") == heads + 2


def test_an_unchanged_tag_is_revalidated_by_head_alone(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    image = make_image((2048,), seed=142)
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/same:1")
    cache = cache_factory([{"name": "dist", "url": upstream.url, "prefix": PREFIX, "tag_ttl": 0}])
    url = f"{cache.url}/v2/{PREFIX}/team/same/manifests/1"
    for _ in range(3):
        assert http(url, accept=OCI_MANIFEST).headers["Docker-Content-Digest"] == image.digest
    assert upstream.proxy.count("GET", "/manifests/") == 1
    assert upstream.proxy.count("HEAD", "/manifests/1") == 2
    metrics = http(f"{cache.url}/metrics").body.decode()
    assert 'nimbus_proxy_revalidations_total{result="unchanged",upstream="dist"} 2.0' in metrics
