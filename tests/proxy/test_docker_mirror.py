"""The real Docker engine with `registry-mirrors` pointing at Nimbus pulls `library/app:1`, an
image only the upstream standing in for Docker Hub has (docker asks the mirror for the
unprefixed name, and Nimbus's default upstream serves it)."""

from __future__ import annotations

import shutil

import pytest

from tests.fixtures.docker import DockerEngineFactory
from tests.fixtures.images import LayoutFactory, make_image
from tests.proxy.conftest import CacheFactory, Upstream, push, stored_blob

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


def test_docker_pulls_through_the_mirror(
    upstream: Upstream,
    cache_factory: CacheFactory,
    oci_layout_factory: LayoutFactory,
    docker_engine_factory: DockerEngineFactory,
) -> None:
    image = make_image((50_000, 10_000), seed=180)
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "library/app:1")
    cache = cache_factory([{"name": "hub", "url": upstream.url}], default="hub")
    docker = docker_engine_factory({"registry-mirrors": [cache.url]})

    docker.run("pull", "app:1")
    inspected = docker.run(
        "image", "inspect", "--format", "{{index .RepoDigests 0}}", "app:1"
    ).stdout.strip()
    assert inspected == f"app@{image.digest}"
    assert upstream.proxy.count("GET", "/v2/library/app/manifests/1") == 1
    for blob in image.layers:
        assert stored_blob(cache, blob.digest).read_bytes() == blob.data
