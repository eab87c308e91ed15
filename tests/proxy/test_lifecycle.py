"""The cache's lifecycle on a real registry: least-recently-used eviction under max_bytes (pushed
content stays; an evicted image is fetched again), idle tags removed, lock files not left
behind, and garbage collection taking the records of what it removes."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from registry.services import Services
from registry.services.gc import GarbageCollector
from registry.storage.filesystem import FilesystemDriver
from tests.fixtures.images import OCI_MANIFEST, Image, LayoutFactory, make_image
from tests.fixtures.registry import RegistryProcess
from tests.proxy.conftest import PREFIX, CacheFactory, Upstream, http, push, stored_blob

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")

MIB = 1 << 20
FAST = {"evict_interval": 0.3, "usage_flush_interval": 0.1}


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def pull_image(cache: RegistryProcess, name: str, image: Image) -> None:
    """Manifest by tag, then every blob, each checked."""
    base = f"{cache.url}/v2/{name}"
    got = http(f"{base}/manifests/1", accept=OCI_MANIFEST)
    assert got.status == 200 and got.body == image.manifest.data
    for blob in image.blobs:
        answer = http(f"{base}/blobs/{blob.digest}")
        assert answer.status == 200 and answer.body == blob.data


def records(cache: RegistryProcess) -> dict[str, dict[str, object]]:
    root = cache.data_dir / "_proxy" / "content"
    if not root.exists():
        return {}
    return {
        f"{p.parent.parent.name}:{p.name}": json.loads(p.read_text())
        for p in root.glob("*/*/*")
        if p.is_file()
    }


def test_eviction_under_max_bytes_takes_the_least_recently_used_and_never_pushed_content(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    images = {name: make_image((MIB,), seed=300 + i) for i, name in enumerate("abc")}
    for name, image in images.items():
        push(oci_layout_factory({"1": image}), "1", upstream.registry.host, f"team/{name}:1")
    cache = cache_factory(
        [{"name": "dist", "url": upstream.url, "prefix": PREFIX}],
        settings={"max_bytes": int(2.5 * MIB), **FAST},
    )
    # Pushed to a local repository: never evicted, not counted.
    local = make_image((MIB,), seed=310)
    push(oci_layout_factory({"1": local}), "1", cache.host, "local/app:1")

    pull_image(cache, f"{PREFIX}/team/a", images["a"])
    pull_image(cache, f"{PREFIX}/team/b", images["b"])
    time.sleep(0.3)
    pull_image(cache, f"{PREFIX}/team/a", images["a"])  # a is now more recent than b
    time.sleep(0.3)  # the use is flushed
    pull_image(cache, f"{PREFIX}/team/c", images["c"])  # past the bound: b must go

    b = images["b"]
    wait_for(lambda: not stored_blob(cache, b.layers[0].digest).exists())
    for blob in (b.manifest, *b.blobs):
        assert not stored_blob(cache, blob.digest).exists()
        assert blob.digest not in records(cache)
    for image in (images["a"], images["c"], local):
        for blob in (image.manifest, *image.blobs):
            assert stored_blob(cache, blob.digest).read_bytes() == blob.data
    assert not (cache.data_dir / "repositories" / PREFIX / "team/b/_manifests/tags/1").exists()
    cached = sum(int(str(r["size"])) for r in records(cache).values())
    assert cached <= 2.5 * MIB
    assert local.layers[0].digest not in records(cache)
    metrics = http(f"{cache.url}/metrics").body.decode()
    assert 'nimbus_proxy_evictions_total{kind="blob"} 2.0' in metrics

    # Pulled again: fetched from the upstream once more, with the same bytes.
    layer_gets = upstream.proxy.count("GET", f"/blobs/{b.layers[0].digest}")
    pull_image(cache, f"{PREFIX}/team/b", b)
    assert upstream.proxy.count("GET", f"/blobs/{b.layers[0].digest}") == layer_gets + 1
    assert stored_blob(cache, b.layers[0].digest).read_bytes() == b.layers[0].data


def test_an_idle_tag_goes_and_the_next_pull_fetches_it_again(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    image = make_image((10_000,), seed=320)
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/idle:1")
    cache = cache_factory(
        [{"name": "dist", "url": upstream.url, "prefix": PREFIX}],
        settings={"tag_max_idle": 1.5, **FAST},
    )
    name = f"{PREFIX}/team/idle"
    tag_dir = cache.data_dir / "repositories" / name / "_manifests/tags/1"
    pull_image(cache, name, image)
    # Pulled now and then, the tag stays past its idle age.
    for _ in range(4):
        time.sleep(0.6)
        assert http(f"{cache.url}/v2/{name}/manifests/1", accept=OCI_MANIFEST).status == 200
    assert tag_dir.exists()
    gets = upstream.proxy.count("GET", "/manifests/1")
    wait_for(lambda: not tag_dir.exists())
    assert not (cache.data_dir / "_proxy/repositories" / name / "_tags/1").exists()
    # The single-flight lock files went with their fills.
    assert list((cache.data_dir / "_inflight" / "locks").iterdir()) == []
    assert http(f"{cache.url}/v2/{name}/manifests/1", accept=OCI_MANIFEST).body == (
        image.manifest.data
    )
    assert upstream.proxy.count("GET", "/manifests/1") == gets + 1


async def test_garbage_collection_takes_the_records_of_what_it_removes(
    upstream: Upstream,
    cache_factory: CacheFactory,
    oci_layout_factory: LayoutFactory,
    tmp_path: Path,
) -> None:
    image = make_image((10_000,), seed=330)
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/gc:1")
    cache = cache_factory(
        [{"name": "dist", "url": upstream.url, "prefix": PREFIX}],
        settings={"tag_max_idle": 0.5, **FAST},
    )
    name = f"{PREFIX}/team/gc"
    pull_image(cache, name, image)
    assert {b.digest for b in (image.manifest, *image.blobs)} <= set(records(cache))
    wait_for(lambda: not (cache.data_dir / "repositories" / name / "_manifests/tags/1").exists())
    cache.stop()

    driver = FilesystemDriver(cache.data_dir)
    services = Services.build(driver)
    collector = GarbageCollector(driver, services.repositories, services.manifests)
    options = collector.options(delete_untagged=True, grace_seconds=0)
    async for _ in collector.run(options):
        pass
    await driver.close()
    for blob in (image.manifest, *image.blobs):
        assert not stored_blob(cache, blob.digest).exists()
    assert records(cache) == {}
