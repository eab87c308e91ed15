"""`nimbus ctl retention list|add|rm|dry-run|run` and the quota lines of `nimbus ctl stats`."""

from __future__ import annotations

import json

import aiohttp

from tests.fixtures.images import make_image
from tests.lifecycle.conftest import TOKEN, LifecycleRegistry, oci
from tests.registry_admin.conftest import run_ctl


async def test_retention_commands(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession
):
    quotas = {
        "policies": {"quotas": [{"name": "ci-size", "repositories": "ci/*", "bytes": "1MiB"}]}
    }
    registry = lifecycle_registry(quotas)

    def ctl(*args: str):
        return run_ctl("--registry", registry.grpc_address, "--token", TOKEN, *args)

    client = oci(http, registry)
    for i in range(3):
        await client.push_image("ci/tool", make_image((500,), seed=500 + i), f"b{i}")

    added = await ctl(
        "retention",
        "add",
        "newest",
        "--repositories",
        "ci/*",
        "--keep-last",
        "1",
        "--untagged-older-than",
        "0s",
    )
    assert added.returncode == 0, added.stderr
    assert "added retention rule newest" in added.stdout
    listed = await ctl("retention", "list")
    assert "newest" in listed.stdout and "ci/*" in listed.stdout
    bad = await ctl("retention", "add", "broken", "--repositories", "ci/*", "--keep-last", "-2")
    assert bad.returncode != 0 and "keep_last" in bad.stderr

    dry = await ctl("--json", "retention", "dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = [json.loads(line) for line in dry.stdout.splitlines()]
    planned = sorted(x["item"]["tag"] for x in lines if x.get("item", {}).get("kind") == "TAG")
    assert len(planned) == 2  # two of b0, b1, b2 go (pushed within the same second)
    tags = (await client.request("GET", "/v2/ci/tool/tags/list")).json()["tags"]
    assert len(tags) == 3  # a dry run deletes nothing

    ran = await ctl("retention", "run")
    assert ran.returncode == 0, ran.stderr
    assert "[done] deleted 2 tags and 2 manifests" in ran.stdout
    tags = (await client.request("GET", "/v2/ci/tool/tags/list")).json()["tags"]
    assert len(tags) == 1 and tags[0] not in planned

    stats = await ctl("stats")
    assert "Quota ci/tool" in stats.stdout and "(rule ci-size)" in stats.stdout
    assert "of 1.0 MiB" in stats.stdout, stats.stdout

    removed = await ctl("retention", "rm", "newest")
    assert removed.returncode == 0 and "removed retention rule newest" in removed.stdout
    assert "no retention rules" in (await ctl("retention", "list")).stdout
    missing = await ctl("retention", "rm", "newest")
    assert missing.returncode != 0 and "no retention rule named" in missing.stderr
