"""nimbus.v1.Cache through the registry's real gRPC server and `nimbus ctl cache`: upstreams with
their health and counters, cached repositories, warming an index's one platform with streamed
progress, purging a tag and a repository; a registry without upstreams refuses clearly."""

from __future__ import annotations

import json
import shutil

import grpc
import pytest

from proto.nimbus.v1 import cache_pb2 as pb
from proto.nimbus.v1 import cache_pb2_grpc as pb_grpc
from tests.fixtures.images import OCI_INDEX, LayoutFactory, make_multiplatform
from tests.fixtures.registry import RegistryFactory, RegistryProcess, free_port
from tests.proxy.conftest import PREFIX, CacheFactory, Upstream, http, push, stored_blob
from tests.registry_admin.conftest import run_ctl

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


async def ctl(cache: RegistryProcess, *args: str) -> str:
    result = await run_ctl("--registry", cache.grpc_address, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_upstreams_warm_repositories_and_purge(
    upstream: Upstream, cache_factory: CacheFactory, oci_layout_factory: LayoutFactory
) -> None:
    index = make_multiplatform((50_000, 20_000), seed=400)
    push(oci_layout_factory({"1": index}), "1", upstream.registry.host, "team/multi:1", "--all")
    dead = f"http://127.0.0.1:{free_port()}"
    cache = cache_factory(
        [
            {"name": "dist", "url": upstream.url, "prefix": PREFIX},
            {"name": "gone", "url": dead, "prefix": "gone.test", "timeout": 2},
        ],
        settings={"max_bytes": 10_000_000},
    )
    name = f"{PREFIX}/team/multi"
    amd64, arm64 = index.images[0], index.images[1]
    assert amd64.platform["architecture"] == "amd64"

    # Warm one platform: streamed progress to a last message with the totals.
    lines = (await ctl(cache, "cache", "warm", f"{name}:1", "--platform", "linux/amd64")).strip()
    steps = lines.splitlines()
    assert steps[-1].startswith(f"{name}:1 cached: {2 + len(amd64.blobs)} items")
    assert any(amd64.layers[0].digest[7:19] in s for s in steps)
    for blob in (index.manifest, amd64.manifest, *amd64.blobs):
        assert stored_blob(cache, blob.digest).read_bytes() == blob.data
    for blob in arm64.layers:
        assert not stored_blob(cache, blob.digest).exists()
    gets = upstream.proxy.count("GET", "/blobs/")
    # Warm again, as JSON: everything is cached already, nothing fetched.
    again = [
        json.loads(line)
        for line in (
            await ctl(cache, "--json", "cache", "warm", f"{name}:1", "--platform", "linux/amd64")
        ).splitlines()
    ]
    assert again[-1]["done"] and not again[-1].get("bytes_fetched")
    assert all(step.get("already_cached") for step in again[:-1])
    assert upstream.proxy.count("GET", "/blobs/") == gets

    async with grpc.aio.insecure_channel(cache.grpc_address) as channel:
        stub = pb_grpc.CacheStub(channel)
        reply = await stub.ListUpstreams(pb.ListUpstreamsRequest())
        by_name = {u.name: u for u in reply.upstreams}
        assert by_name["dist"].reachable and by_name["dist"].prefix == PREFIX
        assert not by_name["gone"].reachable and by_name["gone"].error
        stats = by_name["dist"].stats
        assert stats.blob_misses == len(amd64.blobs) and stats.blob_hits == len(amd64.blobs)
        assert stats.bytes_from_upstream >= sum(b.size for b in amd64.blobs)
        assert reply.max_bytes == 10_000_000

        listed = await stub.ListCachedRepositories(pb.ListCachedRepositoriesRequest())
        [repo] = listed.repositories
        assert (repo.name, repo.upstream, repo.remote) == (name, "dist", "team/multi")
        assert repo.tag_count == 1 and repo.manifest_count == 2
        assert repo.size == sum(b.size for b in (index.manifest, amd64.manifest, *amd64.blobs))

        # Purging a tag: the next pull of it asks the upstream again.
        purged = await stub.Purge(pb.PurgeRequest(repository=name, tag="1"))
        assert purged.tags_removed == 1
        manifest_gets = upstream.proxy.count("GET", "/manifests/1")
        assert http(f"{cache.url}/v2/{name}/manifests/1", accept=OCI_INDEX).status == 200
        assert upstream.proxy.count("GET", "/manifests/1") == manifest_gets + 1

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Purge(pb.PurgeRequest(repository="local/app"))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    table = await ctl(cache, "cache", "upstreams")
    assert table.splitlines()[0].split()[:4] == ["UPSTREAM", "URL", "PREFIX", "HEALTH"]
    assert "down:" in table and "ok (" in table
    repos = json.loads(await ctl(cache, "--json", "cache", "repos"))
    assert [r["name"] for r in repos] == [name]

    # Purging the repository takes its content; a pull fetches it all again.
    out = await ctl(cache, "cache", "purge", name)
    assert out.startswith(f"purged {name}: 1 tags, 2 manifests, {len(amd64.blobs)} blobs")
    for blob in (index.manifest, amd64.manifest, *amd64.blobs):
        assert not stored_blob(cache, blob.digest).exists()
    assert json.loads(await ctl(cache, "--json", "cache", "repos")) == []
    layer = amd64.layers[0]
    assert http(f"{cache.url}/v2/{name}/blobs/{layer.digest}").body == layer.data


async def test_a_registry_without_upstreams_says_so(registry_factory: RegistryFactory) -> None:
    registry = registry_factory()
    result = await run_ctl("--registry", registry.grpc_address, "cache", "upstreams")
    assert result.returncode == 1
    assert "no pull-through cache" in result.stderr
