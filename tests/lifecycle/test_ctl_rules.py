"""`nimbus ctl immutable list|add|rm` and `nimbus ctl quota list|add|rm` against a live
registry: the rules they write are enforced over the OCI API, edits keep one another."""

from __future__ import annotations

import json

import aiohttp

from proto.nimbus.v1 import registry_pb2 as pb
from tests.fixtures.images import make_image
from tests.lifecycle.conftest import TOKEN, LifecycleRegistry, admin, oci
from tests.registry_admin.conftest import run_ctl


async def test_immutable_commands(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession
):
    registry = lifecycle_registry()

    def ctl(*args: str):
        return run_ctl("--registry", registry.grpc_address, "--token", TOKEN, *args)

    client = oci(http, registry)
    first, second = make_image((300,), seed=11), make_image((300,), seed=12)
    await client.push_image("release/app", first, "v1")
    await client.push_blobs("release/app", second.blobs)

    assert "no immutable tag rules" in (await ctl("immutable", "list")).stdout
    added = await ctl("immutable", "add", "release/*:v*", "--name", "releases")
    assert added.returncode == 0, added.stderr
    assert "added immutable tag rule releases (revision 1)" in added.stdout
    listed = await ctl("--json", "immutable", "list")
    assert json.loads(listed.stdout) == [{"name": "releases", "pattern": "release/*:v*"}]

    moved = await client.put_manifest("release/app", "v1", second.manifest)
    moved.expect_error(403, "DENIED")
    assert "releases" in moved.json()["errors"][0]["message"]
    bad = await ctl("immutable", "add", "no-colon")
    assert bad.returncode != 0 and "pattern" in bad.stderr
    twice = await ctl("immutable", "add", "other/*:v*", "--name", "releases")
    assert twice.returncode != 0 and "exists" in twice.stderr

    removed = await ctl("immutable", "rm", "releases")
    assert removed.returncode == 0 and "removed immutable tag rule releases" in removed.stdout
    assert (await client.put_manifest("release/app", "v1", second.manifest)).status == 201
    missing = await ctl("immutable", "rm", "releases")
    assert missing.returncode != 0 and "no immutable tag rule named" in missing.stderr


async def test_quota_commands_keep_other_rules(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession
):
    seed = {"policies": {"retention": [{"name": "old", "repositories": "x/*", "keep_last": 5}]}}
    registry = lifecycle_registry(seed)

    def ctl(*args: str):
        return run_ctl("--registry", registry.grpc_address, "--token", TOKEN, *args)

    client = oci(http, registry)
    added = await ctl("quota", "add", "small", "--repositories", "team/*", "--tags", "1")
    assert added.returncode == 0, added.stderr
    assert "(revision 2)" in added.stdout  # revision 1 is the seed
    sized = await ctl("quota", "add", "sized", "--repositories", "big/**", "--bytes", "2MiB")
    assert sized.returncode == 0, sized.stderr
    table = (await ctl("quota", "list")).stdout
    assert "small" in table and "team/*" in table and "no limit" in table
    assert "sized" in table and "2.0 MiB" in table
    bad = await ctl("quota", "add", "broken", "--repositories", "a/*", "--bytes", "lots")
    assert bad.returncode != 0 and "--bytes" in bad.stderr
    empty = await ctl("quota", "add", "empty", "--repositories", "a/*")
    assert empty.returncode != 0 and "quotas[2]" in empty.stderr

    await client.push_image("team/app", make_image((200,), seed=21), "a")
    other = make_image((200,), seed=22)
    await client.push_blobs("team/app", other.blobs)
    refused = await client.put_manifest("team/app", "b", other.manifest)
    refused.expect_error(403, "DENIED")
    assert "small" in refused.json()["errors"][0]["message"]

    async with admin(registry) as stub:
        stored = await stub.GetLifecyclePolicies(pb.GetLifecyclePoliciesRequest())
    # The retention rule seeded from the YAML is still there after both edits.
    assert [r.name for r in stored.retention] == ["old"]
    assert [(r.name, r.bytes, r.tags) for r in stored.quotas] == [
        ("small", 0, 1),
        ("sized", 2 * 1024 * 1024, 0),
    ]

    assert (await ctl("quota", "rm", "small")).returncode == 0
    # With the tag limit gone the same manifest is accepted.
    assert (await client.put_manifest("team/app", "b", other.manifest)).status == 201
    assert "small" not in (await ctl("quota", "list")).stdout
