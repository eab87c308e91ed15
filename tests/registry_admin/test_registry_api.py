"""`nimbus.v1.Registry` against a registry populated by real pushes (HTTP uploads and skopeo)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from typing import Any

import grpc
import pytest

from proto.nimbus.v1 import registry_pb2 as pb
from tests.fixtures.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    LayoutFactory,
    make_artifact,
    make_image,
    make_multiplatform,
)
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient

SIGNATURE = "application/vnd.example.signature.v1"
UNKNOWN_DIGEST = "sha256:" + "0" * 64


async def _all_repositories(admin: Any, page_size: int) -> list[Any]:
    found: list[Any] = []
    token = ""
    while True:
        page = await admin.ListRepositories(
            pb.ListRepositoriesRequest(page_size=page_size, page_token=token)
        )
        assert len(page.repositories) <= page_size
        found.extend(page.repositories)
        token = page.next_page_token
        if not token:
            return found


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    code: grpc.StatusCode = failed.value.code()
    return code


async def test_lists_and_describes_pushed_images(admin: Any, client: OCIClient, repo: str):
    image = make_image((3000, 5000), seed=11)
    await client.push_image(repo, image, "v1")
    assert (await client.put_manifest(repo, "latest", image.manifest)).status == 201
    signature = make_artifact(image.manifest, SIGNATURE, b"signed by test")
    await client.push_image(repo, signature)
    index = make_multiplatform((700,), seed=12)
    await client.push_index(f"{repo}-multi", index, "v2")

    repositories = {r.name: r for r in await _all_repositories(admin, page_size=1)}
    assert repositories[repo].tag_count == 2
    assert repositories[repo].manifest_count == 2  # the image and its signature
    assert repositories[f"{repo}-multi"].tag_count == 1
    assert repositories[f"{repo}-multi"].manifest_count == 3  # the index and two images
    assert list(repositories) == sorted(repositories)

    tags = []
    token = ""
    while True:
        page = await admin.ListTags(
            pb.ListTagsRequest(repository=repo, page_size=1, page_token=token)
        )
        tags.extend(page.tags)
        token = page.next_page_token
        if not token:
            break
    assert [t.name for t in tags] == ["latest", "v1"]
    for tag in tags:
        assert tag.digest == image.digest
        assert tag.media_type == OCI_MANIFEST
        assert tag.size == image.manifest.size
        assert tag.updated.seconds > 0
        assert not tag.HasField("last_pulled")

    # A pull through v1 (and one by digest, which is no tag's) shows on v1 alone, at once: this
    # process's pull times are read with what storage holds.
    before = int(time.time())
    assert (await client.manifest(repo, "v1")).status == 200
    assert (await client.manifest(repo, image.digest)).status == 200
    page = await admin.ListTags(pb.ListTagsRequest(repository=repo))
    pulled = {t.name: t for t in page.tags}
    assert pulled["v1"].HasField("last_pulled")
    assert before <= pulled["v1"].last_pulled.seconds <= int(time.time())
    assert not pulled["latest"].HasField("last_pulled")

    by_tag = await admin.GetManifest(pb.GetManifestRequest(repository=repo, reference="v1"))
    by_digest = await admin.GetManifest(
        pb.GetManifestRequest(repository=repo, reference=image.digest)
    )
    assert by_tag == by_digest
    assert by_tag.digest == image.digest
    assert by_tag.media_type == OCI_MANIFEST
    assert by_tag.size == image.manifest.size
    assert by_tag.total_size == image.manifest.size + sum(b.size for b in image.blobs)
    assert list(by_tag.tags) == ["latest", "v1"]
    assert [(p.os, p.architecture) for p in by_tag.platforms] == [("linux", "amd64")]
    assert by_tag.config.digest == image.config.digest
    assert [layer.digest for layer in by_tag.layers] == [b.digest for b in image.layers]
    assert [(r.digest, r.artifact_type) for r in by_tag.referrers] == [
        (signature.digest, SIGNATURE)
    ]

    signed = await admin.GetManifest(
        pb.GetManifestRequest(repository=repo, reference=signature.digest)
    )
    assert signed.artifact_type == SIGNATURE
    assert signed.subject.digest == image.digest
    assert list(signed.platforms) == []  # an artifact's empty config has no platform

    multi = await admin.GetManifest(
        pb.GetManifestRequest(repository=f"{repo}-multi", reference="v2")
    )
    assert multi.media_type == OCI_INDEX
    assert [(p.os, p.architecture) for p in multi.platforms] == [
        ("linux", "amd64"),
        ("linux", "arm64"),
    ]
    assert [m.digest for m in multi.manifests] == [i.digest for i in index.images]
    children = sum(i.manifest.size + sum(b.size for b in i.blobs) for i in index.images)
    assert multi.total_size == index.manifest.size + children


async def test_deletes_tags_and_manifests(admin: Any, client: OCIClient, repo: str):
    image = make_image((1500,), seed=21)
    await client.push_image(repo, image, "keep")
    assert (await client.put_manifest(repo, "drop", image.manifest)).status == 201
    signature = make_artifact(image.manifest, SIGNATURE)
    await client.push_image(repo, signature)

    deleted = await admin.DeleteTag(pb.DeleteTagRequest(repository=repo, tag="drop"))
    assert deleted.digest == image.digest
    assert (await client.manifest(repo, "drop")).status == 404
    assert (await client.manifest(repo, "keep")).status == 200
    page = await admin.ListTags(pb.ListTagsRequest(repository=repo))
    assert [t.name for t in page.tags] == ["keep"]
    assert await _code(admin.DeleteTag(pb.DeleteTagRequest(repository=repo, tag="drop"))) == (
        grpc.StatusCode.NOT_FOUND
    )

    removed = await admin.DeleteManifest(
        pb.DeleteManifestRequest(repository=repo, digest=signature.digest)
    )
    assert list(removed.removed_tags) == []
    details = await admin.GetManifest(pb.GetManifestRequest(repository=repo, reference="keep"))
    assert list(details.referrers) == []

    removed = await admin.DeleteManifest(
        pb.DeleteManifestRequest(repository=repo, digest=image.digest)
    )
    assert removed.digest == image.digest
    assert list(removed.removed_tags) == ["keep"]
    assert (await client.manifest(repo, image.digest)).status == 404
    assert (await client.manifest(repo, "keep")).status == 404
    page = await admin.ListTags(pb.ListTagsRequest(repository=repo))
    assert list(page.tags) == []


async def test_bad_requests(admin: Any, client: OCIClient, repo: str):
    await client.push_image(repo, make_image((100,), seed=31), "v1")
    not_found = grpc.StatusCode.NOT_FOUND
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    calls = [
        (admin.ListTags(pb.ListTagsRequest(repository="no/such/repo")), not_found),
        (admin.GetManifest(pb.GetManifestRequest(repository=repo, reference="v9")), not_found),
        (
            admin.GetManifest(
                pb.GetManifestRequest(repository=repo, reference="sha256:" + "0" * 64)
            ),
            not_found,
        ),
        (admin.GetManifest(pb.GetManifestRequest(repository="Bad/Name", reference="v1")), invalid),
        (admin.ListTags(pb.ListTagsRequest(repository="../etc")), invalid),
        (admin.DeleteTag(pb.DeleteTagRequest(repository=repo, tag="bad tag")), invalid),
        (admin.DeleteManifest(pb.DeleteManifestRequest(repository=repo, digest="v1")), invalid),
        (admin.ListRepositories(pb.ListRepositoriesRequest(page_size=-1)), invalid),
    ]
    for call, expected in calls:
        assert await _code(call) == expected


async def test_stats_count_what_is_stored(
    admin: Any,
    client: OCIClient,
    repo: str,
    admin_registry: RegistryProcess,
    oci_layout_factory: LayoutFactory,
):
    before = await admin.GetStats(pb.GetStatsRequest())
    image = make_image((2000, 3000), seed=41)
    # skopeo, a real client, pushes this one.
    layout = oci_layout_factory({"v1": image})
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed")
    await asyncio.to_thread(
        subprocess.run,
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            layout.ref("v1"),
            f"docker://{admin_registry.host}/{repo}:v1",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    await client.start_upload(repo)
    after = await admin.GetStats(pb.GetStatsRequest())
    assert after.repositories == before.repositories + 1
    assert after.tags == before.tags + 1
    assert after.manifests == before.manifests + 1
    # Config, two layers and the manifest itself.
    assert after.blobs == before.blobs + 4
    assert after.blob_bytes == before.blob_bytes + image.manifest.size + sum(
        b.size for b in image.blobs
    )
    assert after.uploads_in_progress == before.uploads_in_progress + 1
    details = await admin.GetManifest(pb.GetManifestRequest(repository=repo, reference="v1"))
    assert details.digest == image.digest
