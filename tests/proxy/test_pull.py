"""Pulling through the cache from a real CNCF Distribution: prefixed names, the default upstream,
containerd's `?ns=`, multi-platform indexes, local repositories beside, pushes refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.fixtures.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    LayoutFactory,
    make_image,
    make_multiplatform,
)
from tests.proxy.conftest import (
    PREFIX,
    CacheFactory,
    Upstream,
    UpstreamFactory,
    http,
    layout_blobs,
    pull,
    push,
    skopeo,
    stored_blob,
)

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")

LAYERS = (300_000, 1_500_000, 20_000)


def upstream_section(upstream: Upstream, name: str = "dist", **extra: object) -> dict[str, object]:
    return {"name": name, "url": upstream.url, "prefix": PREFIX, **extra}


def test_prefixed_pull_has_the_upstreams_digests_and_the_second_pull_is_local(
    upstream: Upstream,
    cache_factory: CacheFactory,
    oci_layout_factory: LayoutFactory,
    tmp_path: Path,
) -> None:
    image = make_image(LAYERS, seed=130)
    layout = oci_layout_factory({"1": image})
    push(layout, "1", upstream.registry.host, "team/app:1")
    cache = cache_factory([upstream_section(upstream)])

    pull(cache.host, f"{PREFIX}/team/app:1", tmp_path / "first")
    pulled = layout_blobs(tmp_path / "first")
    for blob in (image.manifest, *image.blobs):
        assert pulled[blob.digest] == blob.data
    inspected = json.loads(
        skopeo("inspect", "--tls-verify=false", f"docker://{cache.host}/{PREFIX}/team/app:1").stdout
    )
    direct = json.loads(
        skopeo(
            "inspect", "--tls-verify=false", f"docker://{upstream.registry.host}/team/app:1"
        ).stdout
    )
    assert inspected["Digest"] == direct["Digest"] == image.digest
    assert inspected["Layers"] == direct["Layers"]
    # Stored as content of the cache's own, under the prefixed name.
    for blob in image.blobs:
        assert stored_blob(cache, blob.digest).read_bytes() == blob.data

    gets = upstream.proxy.count("GET", "/blobs/")
    assert gets == len(image.blobs)
    upstream.registry.stop()  # the second pull by digest needs nothing from the upstream
    pull(cache.host, f"{PREFIX}/team/app@{image.digest}", tmp_path / "second")
    assert layout_blobs(tmp_path / "second")[image.digest] == image.manifest.data


def test_unprefixed_names_go_to_the_default_upstream(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    image = make_image((4096,), seed=131)
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "library/app:1")
    cache = cache_factory([upstream_section(upstream, include=["library/**"])], default="dist")
    answer = http(f"{cache.url}/v2/library/app/manifests/1", accept=OCI_MANIFEST)
    assert answer.status == 200
    assert answer.body == image.manifest.data
    assert answer.headers["Docker-Content-Digest"] == image.digest
    # The include globs leave other names to local repositories.
    local = make_image((1024,), seed=132)
    push(oci_layout_factory({"1": local}), "1", cache.host, "mine/app:1")
    assert http(f"{cache.url}/v2/mine/app/manifests/1", accept=OCI_MANIFEST).body == (
        local.manifest.data
    )
    assert upstream.proxy.count("GET", "/v2/mine/") == 0


def test_ns_query_picks_the_upstream_of_two(
    upstream_factory: UpstreamFactory,
    cache_factory: CacheFactory,
    oci_layout_factory: LayoutFactory,
) -> None:
    first, second = upstream_factory(), upstream_factory()
    one, two = make_image((2048,), seed=133), make_image((2048,), seed=134)
    push(oci_layout_factory({"1": one}), "1", first.registry.host, "team/app:1")
    push(oci_layout_factory({"1": two}), "1", second.registry.host, "team/app:1")
    cache = cache_factory(
        [
            {"name": "one", "url": first.url, "prefix": "one.example"},
            {"name": "two", "url": second.url, "prefix": "two.example"},
        ]
    )
    base = f"{cache.url}/v2/team/app"
    by_prefix = http(f"{base}/manifests/1?ns=one.example", accept=OCI_MANIFEST)
    assert by_prefix.headers["Docker-Content-Digest"] == one.digest
    # containerd sends the upstream's host as it appears in its hosts.toml.
    by_host = http(f"{base}/manifests/1?ns={second.proxy.host}", accept=OCI_MANIFEST)
    assert by_host.headers["Docker-Content-Digest"] == two.digest
    layer = two.layers[0]
    blob = http(f"{base}/blobs/{layer.digest}?ns={second.proxy.host}")
    assert blob.status == 200 and blob.body == layer.data
    # The same cache as the prefixed name: no second upstream request.
    again = http(f"{cache.url}/v2/two.example/team/app/blobs/{layer.digest}")
    assert again.body == layer.data
    assert second.proxy.count("GET", f"/blobs/{layer.digest}") == 1
    assert first.proxy.count("GET", "/blobs/") == 0
    # Without ?ns= (and no default) the name is a local repository, which has nothing.
    assert http(f"{base}/manifests/1", accept=OCI_MANIFEST).status == 404


def test_one_platform_of_an_index_fetches_only_that_platform(
    upstream: Upstream,
    cache_factory: CacheFactory,
    oci_layout_factory: LayoutFactory,
    tmp_path: Path,
) -> None:
    index = make_multiplatform((100_000, 50_000), seed=135)
    push(oci_layout_factory({"1": index}), "1", upstream.registry.host, "team/multi:1", "--all")
    cache = cache_factory([upstream_section(upstream)])

    answer = http(f"{cache.url}/v2/{PREFIX}/team/multi/manifests/1", accept=OCI_INDEX)
    assert answer.status == 200 and answer.body == index.manifest.data
    amd64, arm64 = index.images
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--override-arch=arm64",
        f"docker://{cache.host}/{PREFIX}/team/multi:1",
        f"oci:{tmp_path / 'arm'}:x",
    )
    pulled = layout_blobs(tmp_path / "arm")
    for blob in (arm64.manifest, *arm64.blobs):
        assert pulled[blob.digest] == blob.data
    assert upstream.proxy.count("GET", f"/manifests/{arm64.digest}") == 1
    assert upstream.proxy.count("GET", f"/manifests/{amd64.digest}") == 0
    for blob in amd64.blobs:
        assert upstream.proxy.count("GET", blob.digest) == 0
        assert not stored_blob(cache, blob.digest).exists()


def test_push_to_a_proxied_prefix_is_denied_and_nothing_is_stored(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    cache = cache_factory([upstream_section(upstream)])
    image = make_image((4096,), seed=136)
    layout = oci_layout_factory({"1": image})
    result = skopeo(
        "copy",
        "--dest-tls-verify=false",
        layout.ref("1"),
        f"docker://{cache.host}/{PREFIX}/team/pushed:1",
        check=False,
    )
    assert result.returncode != 0
    answer = http(f"{cache.url}/v2/{PREFIX}/team/pushed/blobs/uploads/", method="POST", data=b"")
    assert answer.status == 403
    error = json.loads(answer.body)["errors"][0]
    assert error["code"] == "DENIED"
    assert "cache of upstream dist" in error["message"]
    put = http(
        f"{cache.url}/v2/{PREFIX}/team/pushed/manifests/1",
        method="PUT",
        data=image.manifest.data,
    )
    assert put.status == 403
    assert not (cache.data_dir / "repositories" / PREFIX).exists()
    for blob in image.blobs:
        assert not stored_blob(cache, blob.digest).exists()
    # Beside the cache, a local repository takes pushes as ever.
    push(layout, "1", cache.host, "local/app:1")
    assert http(f"{cache.url}/v2/local/app/manifests/1", accept=OCI_MANIFEST).status == 200


def test_pull_through_onto_s3_storage(
    upstream: Upstream,
    cache_factory: CacheFactory,
    oci_layout_factory: LayoutFactory,
    tmp_path: Path,
) -> None:
    image = make_image((2_000_000, 30_000), seed=137)
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/app:1")
    cache = cache_factory([upstream_section(upstream)], storage="s3")
    for attempt in ("cold", "warm"):
        pull(cache.host, f"{PREFIX}/team/app:1", tmp_path / attempt)
        pulled = layout_blobs(tmp_path / attempt)
        for blob in (image.manifest, *image.blobs):
            assert pulled[blob.digest] == blob.data
    assert upstream.proxy.count("GET", "/blobs/") == len(image.blobs)
