"""Garbage collection over a cache: an index cached with one platform fetched (the other's
manifests and blobs never were) is no damage; the collection runs and keeps what was cached."""

from __future__ import annotations

import shutil

import pytest

from registry.services import Services
from registry.services.gc import GarbageCollector
from registry.storage.filesystem import FilesystemDriver
from tests.fixtures.images import OCI_INDEX, OCI_MANIFEST, LayoutFactory, make_multiplatform
from tests.proxy.conftest import PREFIX, CacheFactory, Upstream, http, push, stored_blob

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


async def test_a_partly_fetched_index_survives_a_collection(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    index = make_multiplatform((10_000,), seed=190)
    push(oci_layout_factory({"1": index}), "1", upstream.registry.host, "team/multi:1", "--all")
    cache = cache_factory([{"name": "dist", "url": upstream.url, "prefix": PREFIX}])
    base = f"{cache.url}/v2/{PREFIX}/team/multi"
    assert http(f"{base}/manifests/1", accept=OCI_INDEX).status == 200
    amd64 = index.images[0]
    assert http(f"{base}/manifests/{amd64.digest}", accept=OCI_MANIFEST).status == 200
    for blob in amd64.blobs:
        assert http(f"{base}/blobs/{blob.digest}").status == 200
    cache.stop()

    driver = FilesystemDriver(cache.data_dir)
    services = Services.build(driver)
    collector = GarbageCollector(driver, services.repositories, services.manifests)
    async for _ in collector.run(collector.options(grace_seconds=0)):
        pass
    await driver.close()
    for blob in (index.manifest, amd64.manifest, *amd64.blobs):
        assert stored_blob(cache, blob.digest).read_bytes() == blob.data
