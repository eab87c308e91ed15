"""Immutable tags through raw HTTP and skopeo: refused moves and deletes, accepted re-pushes,
and the same overwrite accepted once the rule is removed over gRPC."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from proto.nimbus.v1 import registry_pb2 as pb
from tests.fixtures.images import make_image, write_oci_layout
from tests.lifecycle.conftest import LifecycleRegistry, admin, oci

RULES = {"policies": {"immutable": [{"name": "releases", "pattern": "release/*:v*"}]}}


def _denied(reply, rule: str = "releases") -> None:
    reply.expect_error(403, "DENIED")
    assert rule in reply.json()["errors"][0]["message"]


@pytest.mark.parametrize("storage", ["filesystem", "s3"])
async def test_immutable_tag_over_http(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession, storage: str
):
    registry = lifecycle_registry(RULES, storage=storage)
    client = oci(http, registry)
    first, second = make_image(seed=1), make_image(seed=2)
    await client.push_image("release/app", first, "v1")
    await client.push_blobs("release/app", second.blobs)

    # Moving the tag to another manifest is refused, naming the rule; the tag stays.
    _denied(await client.put_manifest("release/app", "v1", second.manifest))
    assert (await client.manifest("release/app", "v1")).headers[
        "Docker-Content-Digest"
    ] == first.digest
    # Re-pushing the same manifest is accepted (CI re-pushes).
    assert (await client.put_manifest("release/app", "v1", first.manifest)).status == 201
    # Deleting the tag, or the manifest it points to, is refused.
    _denied(await client.request("DELETE", "/v2/release/app/manifests/v1"))
    _denied(await client.request("DELETE", f"/v2/release/app/manifests/{first.digest}"))
    assert (await client.manifest("release/app", "v1")).status == 200

    # Outside the rule's globs tags move and go as usual.
    assert (await client.put_manifest("release/app", "latest", first.manifest)).status == 201
    assert (await client.put_manifest("release/app", "latest", second.manifest)).status == 201
    await client.push_image("release/app/debug", first, "v1")
    await client.push_blobs("release/app/debug", second.blobs)
    assert (await client.put_manifest("release/app/debug", "v1", second.manifest)).status == 201
    assert (await client.request("DELETE", "/v2/release/app/manifests/latest")).status == 202

    # The gRPC delete is refused the same way.
    async with admin(registry) as stub:
        with pytest.raises(Exception) as refused:
            await stub.DeleteTag(pb.DeleteTagRequest(repository="release/app", tag="v1"))
        assert "releases" in str(refused.value)

        # With the rule removed the overwrite and the delete work.
        current = await stub.GetLifecyclePolicies(pb.GetLifecyclePoliciesRequest())
        assert [r.pattern for r in current.immutable] == ["release/*:v*"]
        assert current.source == "config"
        emptied = pb.LifecyclePolicies()
        await stub.SetLifecyclePolicies(
            pb.SetLifecyclePoliciesRequest(policies=emptied, expected_revision=current.revision)
        )
    assert (await client.put_manifest("release/app", "v1", second.manifest)).status == 201
    assert (await client.manifest("release/app", "v1")).headers[
        "Docker-Content-Digest"
    ] == second.digest
    assert (await client.request("DELETE", "/v2/release/app/manifests/v1")).status == 202


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
async def test_immutable_tag_through_skopeo(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession, tmp_path: Path
):
    registry = lifecycle_registry(RULES)
    first, second = make_image((2000,), seed=3), make_image((2000,), seed=4)
    layout = write_oci_layout(tmp_path / "layout", {"one": first, "two": second})
    dest = f"docker://{registry.host}/release/web:v2"

    def copy(tag: str) -> subprocess.CompletedProcess[str]:
        return _skopeo("copy", "--dest-tls-verify=false", layout.ref(tag), dest)

    assert copy("one").returncode == 0
    refused = copy("two")
    assert refused.returncode != 0
    assert "releases" in refused.stderr and "immutable" in refused.stderr
    assert copy("one").returncode == 0  # the same digest again
    deleted = _skopeo("delete", "--tls-verify=false", dest)
    assert deleted.returncode != 0 and "immutable" in deleted.stderr
    reply = await oci(http, registry).manifest("release/web", "v2")
    assert reply.headers["Docker-Content-Digest"] == first.digest

    async with admin(registry) as stub:
        await stub.SetLifecyclePolicies(pb.SetLifecyclePoliciesRequest())
    assert copy("two").returncode == 0
    reply = await oci(http, registry).manifest("release/web", "v2")
    assert reply.headers["Docker-Content-Digest"] == second.digest
