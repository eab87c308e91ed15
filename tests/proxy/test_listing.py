"""Listings of a proxied repository come from its upstream: tag lists (paginated here as the spec
says) and referrers (the upstream's API, or its tag schema index); while the upstream fails, what
the cache holds is listed with the stale `Warning`, and with nothing cached the client hears the
upstream's trouble."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.images import OCI_INDEX, OCI_MANIFEST, make_artifact, make_image
from tests.fixtures.registry import RegistryFactory, RegistryProcess
from tests.proxy.conftest import PREFIX, CacheFactory, Upstream, http
from tests.proxy.upstream_proxy import UpstreamProxy
from tests.registry.oci_client import OCIClient

STALE = '110 - "Response is Stale"'
SIGNATURE = "application/vnd.example.signature.v1"
SBOM = "application/vnd.example.sbom.v1+json"


@pytest.fixture
def nimbus_upstream(registry_factory: RegistryFactory) -> Iterator[Upstream]:
    """A Nimbus upstream (it has the referrers API) behind the counting, failing proxy."""
    registry: RegistryProcess = registry_factory()
    proxy = UpstreamProxy(registry.url).start()
    yield Upstream(registry, proxy)
    proxy.stop()


async def push(upstream_url: str, repository: str, *tags: str, seed: int = 0) -> list[str]:
    """One image per tag; their digests."""
    digests = []
    async with aiohttp.ClientSession() as session:
        client = OCIClient(session, upstream_url)
        for number, tag in enumerate(tags):
            image = make_image((512,), seed=seed + number)
            digests.append(await client.push_image(repository, image, tag))
    return digests


def tags_of(url: str) -> tuple[int, dict[str, str], list[str]]:
    answer = http(url)
    body = json.loads(answer.body)
    return answer.status, answer.headers, body.get("tags") or []


async def test_tags_are_listed_from_the_upstream_and_paginated(
    nimbus_upstream: Upstream, cache_factory: CacheFactory
) -> None:
    await push(nimbus_upstream.registry.url, "team/app", "v1", "v2", "v3", "latest")
    cache = cache_factory([{"name": "up", "url": nimbus_upstream.url, "prefix": PREFIX}])
    base = f"{cache.url}/v2/{PREFIX}/team/app/tags/list"

    # Nothing pulled yet: the cache holds none of them, and all four are listed.
    status, headers, tags = tags_of(base)
    assert status == 200 and tags == ["latest", "v1", "v2", "v3"]
    assert "Warning" not in headers
    assert nimbus_upstream.proxy.count("GET", "/v2/team/app/tags/list") >= 1

    status, headers, tags = tags_of(f"{base}?n=2")
    assert tags == ["latest", "v1"]
    assert headers["Link"] == f'</v2/{PREFIX}/team/app/tags/list?n=2&last=v1>; rel="next"'
    status, headers, tags = tags_of(f"{base}?n=2&last=v1")
    assert tags == ["v2", "v3"] and "Link" not in headers

    # A tag added upstream is listed at once: the upstream is the truth, not the cache.
    await push(nimbus_upstream.registry.url, "team/app", "v4", seed=10)
    assert tags_of(base)[2] == ["latest", "v1", "v2", "v3", "v4"]


async def test_tags_are_listed_stale_from_the_cache_while_the_upstream_fails(
    nimbus_upstream: Upstream, cache_factory: CacheFactory
) -> None:
    await push(nimbus_upstream.registry.url, "team/app", "v1", "v2")
    await push(nimbus_upstream.registry.url, "team/other", "v1", seed=5)
    cache = cache_factory(
        [{"name": "up", "url": nimbus_upstream.url, "prefix": PREFIX, "timeout": 5}]
    )
    pulled = http(f"{cache.url}/v2/{PREFIX}/team/app/manifests/v1", accept=OCI_MANIFEST)
    assert pulled.status == 200

    nimbus_upstream.proxy.status = 502
    status, headers, tags = tags_of(f"{cache.url}/v2/{PREFIX}/team/app/tags/list")
    assert status == 200 and tags == ["v1"]
    assert headers["Warning"] == STALE

    # Nothing cached of this one: the upstream's trouble, in the spec's terms.
    answer = http(f"{cache.url}/v2/{PREFIX}/team/other/tags/list")
    assert answer.status == 503
    assert json.loads(answer.body)["errors"][0]["code"] == "UNAVAILABLE"

    nimbus_upstream.proxy.status = None
    assert tags_of(f"{cache.url}/v2/{PREFIX}/team/app/tags/list")[2] == ["v1", "v2"]


def test_a_repository_the_upstream_lacks_is_name_unknown(
    nimbus_upstream: Upstream, cache_factory: CacheFactory
) -> None:
    cache = cache_factory([{"name": "up", "url": nimbus_upstream.url, "prefix": PREFIX}])
    answer = http(f"{cache.url}/v2/{PREFIX}/team/missing/tags/list")
    assert answer.status == 404
    assert json.loads(answer.body)["errors"][0]["code"] == "NAME_UNKNOWN"


async def test_referrers_come_from_the_upstream_and_are_pulled_by_digest(
    nimbus_upstream: Upstream, cache_factory: CacheFactory, tmp_path: Path
) -> None:
    image = make_image((512,), seed=60)
    signature = make_artifact(image.manifest, SIGNATURE, b"sig")
    sbom = make_artifact(image.manifest, SBOM, b"sbom")
    async with aiohttp.ClientSession() as session:
        client = OCIClient(session, nimbus_upstream.registry.url)
        await client.push_image("team/app", image, "v1")
        await client.push_image("team/app", signature)
        await client.push_image("team/app", sbom)
    cache = cache_factory(
        [{"name": "up", "url": nimbus_upstream.url, "prefix": PREFIX, "timeout": 5}]
    )
    url = f"{cache.url}/v2/{PREFIX}/team/app/referrers/{image.digest}"

    answer = http(url)
    assert answer.status == 200 and answer.headers["Content-Type"] == OCI_INDEX
    listed = {d["digest"]: d["artifactType"] for d in json.loads(answer.body)["manifests"]}
    assert listed == {signature.digest: SIGNATURE, sbom.digest: SBOM}

    # The filter, with the `+` of the media type sent unencoded.
    filtered = http(f"{url}?artifactType={SBOM}")
    assert [d["digest"] for d in json.loads(filtered.body)["manifests"]] == [sbom.digest]
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"

    # A listed referrer is fetched by digest like any manifest, then listed from the cache
    # while the upstream fails.
    fetched = http(
        f"{cache.url}/v2/{PREFIX}/team/app/manifests/{signature.digest}", accept=OCI_MANIFEST
    )
    assert fetched.status == 200 and fetched.body == signature.manifest.data
    nimbus_upstream.proxy.status = 503
    stale = http(url)
    assert stale.status == 200 and stale.headers["Warning"] == STALE
    assert [d["digest"] for d in json.loads(stale.body)["manifests"]] == [signature.digest]
