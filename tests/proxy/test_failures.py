"""Upstream trouble: stale-if-error for cached tags, the spec's errors for uncached content,
blobs cut off or altered on the way refused with nothing committed, oversized manifests and
redirect loops refused."""

from __future__ import annotations

import http.client as httpclient
import json
import shutil
import time

import pytest

from tests.fixtures.images import OCI_MANIFEST, LayoutFactory, make_image
from tests.proxy.conftest import PREFIX, CacheFactory, Upstream, http, push, stored_blob
from tests.proxy.upstream_proxy import Canned

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")

STALE = '110 - "Response is Stale"'


def section(upstream: Upstream, **extra: object) -> dict[str, object]:
    return {"name": "dist", "url": upstream.url, "prefix": PREFIX, **extra}


def error_of(body: bytes) -> dict[str, str]:
    error: dict[str, str] = json.loads(body)["errors"][0]
    return error


def raw_get(host: str, port: int, path: str) -> tuple[int, bytes, Exception | None]:
    """Status, the bytes read, and the error that ended the read early (if one did)."""
    connection = httpclient.HTTPConnection(host, port, timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        try:
            return response.status, response.read(), None
        except (httpclient.IncompleteRead, ConnectionError) as exc:
            return response.status, b"", exc
    finally:
        connection.close()


def test_upstream_stopped_serves_cached_tags_stale_and_refuses_uncached(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    image = make_image((2048,), seed=160)
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/app:1")
    cache = cache_factory([section(upstream, tag_ttl=0, timeout=5)])
    url = f"{cache.url}/v2/{PREFIX}/team/app/manifests/1"
    assert http(url, accept=OCI_MANIFEST).status == 200
    assert "Warning" not in http(url, accept=OCI_MANIFEST).headers

    upstream.registry.stop()
    upstream.proxy.status = 502  # the proxy in front answers for the stopped upstream
    stale = http(url, accept=OCI_MANIFEST)
    assert stale.status == 200 and stale.body == image.manifest.data
    assert stale.headers["Warning"] == STALE
    missing = http(f"{cache.url}/v2/{PREFIX}/team/app/manifests/2", accept=OCI_MANIFEST)
    assert missing.status == 503
    error = error_of(missing.body)
    assert error["code"] == "UNAVAILABLE" and "upstream dist" in error["message"]

    # Nothing answering at all: the same.
    upstream.proxy.stop()
    assert http(url, accept=OCI_MANIFEST).headers["Warning"] == STALE
    blob = http(f"{cache.url}/v2/{PREFIX}/team/app/blobs/{image.layers[0].digest}")
    assert blob.status == 503 and "unreachable" in error_of(blob.body)["message"]
    metrics = http(f"{cache.url}/metrics").body.decode()
    assert 'nimbus_proxy_stale_served_total{upstream="dist"} 2.0' in metrics


def test_rate_limited_upstream_answers_toomanyrequests_with_retry_after(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    image = make_image((2048,), seed=161)
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/app:1")
    cache = cache_factory([section(upstream, tag_ttl=0)])
    cached = f"{cache.url}/v2/{PREFIX}/team/app/manifests/1"
    assert http(cached, accept=OCI_MANIFEST).status == 200
    upstream.proxy.status = 429
    upstream.proxy.status_headers = {"Retry-After": "7"}
    answer = http(f"{cache.url}/v2/{PREFIX}/team/other/manifests/1", accept=OCI_MANIFEST)
    assert answer.status == 429
    assert answer.headers["Retry-After"] == "7"
    assert error_of(answer.body)["code"] == "TOOMANYREQUESTS"
    assert http(cached, accept=OCI_MANIFEST).headers["Warning"] == STALE
    unknown = http(f"{cache.url}/v2/{PREFIX}/team/app/blobs/{image.layers[0].digest}")
    assert unknown.status == 429


def test_an_unknown_name_upstream_is_manifest_unknown(
    upstream: Upstream, cache_factory: CacheFactory
) -> None:
    cache = cache_factory([section(upstream)])
    answer = http(f"{cache.url}/v2/{PREFIX}/team/none/manifests/1", accept=OCI_MANIFEST)
    assert answer.status == 404
    assert error_of(answer.body)["code"] == "MANIFEST_UNKNOWN"
    digest = "sha256:" + "0" * 64
    assert http(f"{cache.url}/v2/{PREFIX}/team/none/blobs/{digest}").status == 404


@pytest.mark.parametrize("fault", ["cut", "corrupt"])
def test_a_blob_cut_off_or_altered_upstream_is_refused_and_nothing_is_committed(
    upstream: Upstream,
    cache_factory: CacheFactory,
    oci_layout_factory: LayoutFactory,
    fault: str,
) -> None:
    image = make_image((3 * 1024 * 1024,), seed=162 if fault == "cut" else 163)
    layer = image.layers[0]
    push(oci_layout_factory({"1": image}), "1", upstream.registry.host, "team/app:1")
    cache = cache_factory([section(upstream)])
    if fault == "cut":
        upstream.proxy.cut_blobs_after = 1024 * 1024
    else:
        upstream.proxy.corrupt_blobs = True
    path = f"/v2/{PREFIX}/team/app/blobs/{layer.digest}"
    status, body, error = raw_get("127.0.0.1", cache.port, path)
    # The client never takes it for the blob: the body ends early, or is refused outright.
    assert error is not None or status != 200 or body != layer.data
    time.sleep(0.5)
    assert not stored_blob(cache, layer.digest).exists()
    assert not (
        cache.data_dir / "repositories" / PREFIX / "team/app/_layers/sha256" / layer.digest[7:]
    ).exists()
    uploads = cache.data_dir / "repositories" / PREFIX / "team/app/_uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    if fault == "corrupt":
        log = cache.log_text()
        assert "upstream sent bad content" in log and '"upstream": "dist"' in log

    upstream.proxy.cut_blobs_after = None
    upstream.proxy.corrupt_blobs = False
    status, body, error = raw_get("127.0.0.1", cache.port, path)
    assert (status, error) == (200, None) and body == layer.data
    assert stored_blob(cache, layer.digest).read_bytes() == layer.data


def test_an_upstream_manifest_over_4_mib_is_refused(
    upstream: Upstream, cache_factory: CacheFactory
) -> None:
    cache = cache_factory([section(upstream)])
    big = b'{"schemaVersion":2,"layers":[' + b" " * (4 * 1024 * 1024 + 10) + b"]}"
    upstream.proxy.canned["/v2/team/big/manifests/1"] = Canned(
        200, big, {"Content-Type": OCI_MANIFEST}
    )
    answer = http(f"{cache.url}/v2/{PREFIX}/team/big/manifests/1", accept=OCI_MANIFEST)
    assert answer.status >= 400
    assert "4 MiB" in error_of(answer.body)["message"]
    assert not (cache.data_dir / "repositories" / PREFIX).exists()


def test_an_upstream_redirect_loop_is_refused(
    upstream: Upstream, cache_factory: CacheFactory
) -> None:
    cache = cache_factory([section(upstream)])
    digest = "sha256:" + "1" * 64
    path = f"/v2/team/loop/blobs/{digest}"
    upstream.proxy.canned[path] = Canned(307, b"", {"Location": upstream.url + path})
    answer = http(f"{cache.url}/v2/{PREFIX}/team/loop/blobs/{digest}")
    assert answer.status >= 400
    assert "upstream dist" in error_of(answer.body)["message"]
    assert http(f"{cache.url}/healthz").status == 200
