"""Manifests: push, pull by tag and digest, content negotiation, validation, referrers, delete."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from tests.fixtures.images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    canonical_json,
    make_artifact,
    make_image,
    make_multiplatform,
)
from tests.registry.oci_client import OCIClient

ALL_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
SIGNATURE = "application/vnd.example.signature.v1"
SBOM = "application/vnd.example.sbom.v1"


async def test_push_and_pull_by_tag_and_by_digest(client: OCIClient, repo: str) -> None:
    image = make_image((1000, 2000, 3000), seed=30)
    await client.push_blobs(repo, image.blobs)
    reply = await client.put_manifest(repo, "v1", image.manifest)
    assert reply.status == 201
    assert reply.headers["Docker-Content-Digest"] == image.digest
    assert reply.headers["Location"].endswith(f"/v2/{repo}/manifests/{image.digest}")
    assert "OCI-Subject" not in reply.headers

    for reference in ("v1", image.digest):
        got = await client.manifest(repo, reference, [OCI_MANIFEST])
        assert got.status == 200
        assert got.body == image.manifest.data
        assert got.headers["Content-Type"] == OCI_MANIFEST
        assert got.headers["Docker-Content-Digest"] == image.digest
        head = await client.request(
            "HEAD", f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
        )
        assert head.status == 200
        assert head.body == b""
        assert head.headers["Docker-Content-Digest"] == image.digest
        assert head.headers["Content-Type"] == OCI_MANIFEST
        assert int(head.headers["Content-Length"]) == image.manifest.size


async def test_push_by_digest_without_a_tag(client: OCIClient, repo: str) -> None:
    image = make_image((500,), seed=31)
    await client.push_image(repo, image)
    assert (await client.manifest(repo, image.digest)).body == image.manifest.data
    tags = await client.request("GET", f"/v2/{repo}/tags/list")
    assert tags.json()["tags"] in ([], None)


async def test_retagging_moves_the_tag(client: OCIClient, repo: str) -> None:
    first, second = make_image((100,), seed=32), make_image((100,), seed=33)
    await client.push_image(repo, first, "latest")
    await client.push_image(repo, second, "latest")
    got = await client.manifest(repo, "latest")
    assert got.headers["Docker-Content-Digest"] == second.digest
    # The old manifest stays reachable by digest.
    assert (await client.manifest(repo, first.digest)).body == first.manifest.data


async def test_content_negotiation_over_the_four_manifest_types(
    client: OCIClient, repo: str
) -> None:
    oci_index = make_multiplatform((300,), seed=34)
    docker_list = make_multiplatform((300,), seed=35, docker=True)
    await client.push_index(repo, oci_index, "oci")
    await client.push_index(repo, docker_list, "docker")
    expected = {
        "oci": (OCI_INDEX, oci_index.manifest),
        "docker": (DOCKER_MANIFEST_LIST, docker_list.manifest),
        oci_index.images[0].digest: (OCI_MANIFEST, oci_index.images[0].manifest),
        docker_list.images[1].digest: (DOCKER_MANIFEST, docker_list.images[1].manifest),
    }
    for reference, (media_type, manifest) in expected.items():
        # What a docker or containerd client sends: every type it understands.
        got = await client.manifest(repo, reference, ALL_TYPES)
        assert got.status == 200, reference
        assert got.headers["Content-Type"] == media_type
        assert got.headers["Docker-Content-Digest"] == manifest.digest
        assert got.body == manifest.data
        # Exactly its own type, with parameters and weights as real clients send them.
        got = await client.manifest(repo, reference, [f"{media_type};q=0.9", "text/plain"])
        assert got.status == 200, reference
        # No Accept at all, or a wildcard: the manifest as stored.
        assert (await client.manifest(repo, reference)).body == manifest.data
        assert (await client.manifest(repo, reference, ["*/*"])).body == manifest.data
        # A type the client does not take is not served as if it were.
        others = [t for t in ALL_TYPES if t != media_type]
        got = await client.manifest(repo, reference, others)
        assert got.status == 404, reference
        assert got.headers.get("Content-Type") != media_type


async def test_children_of_an_index_are_pullable_by_digest(client: OCIClient, repo: str) -> None:
    index = make_multiplatform((400, 500), seed=36)
    await client.push_index(repo, index, "multi")
    doc = (await client.manifest(repo, "multi", [OCI_INDEX])).json()
    assert [m["platform"]["architecture"] for m in doc["manifests"]] == ["amd64", "arm64"]
    for descriptor, image in zip(doc["manifests"], index.images, strict=True):
        got = await client.manifest(repo, descriptor["digest"], [OCI_MANIFEST])
        assert got.body == image.manifest.data
        for blob in image.blobs:
            assert (await client.blob(repo, blob.digest)).body == blob.data


async def test_schema1_is_refused(client: OCIClient, repo: str) -> None:
    doc = {
        "schemaVersion": 1,
        "name": repo,
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [],
        "history": [],
    }
    for media_type in (
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
    ):
        reply = await client.put_manifest(repo, "old", Blob(media_type, canonical_json(doc)))
        reply.expect_error(400, "MANIFEST_INVALID")
    (await client.manifest(repo, "old")).expect_error(404, "MANIFEST_UNKNOWN")


async def test_manifest_referencing_a_missing_layer(client: OCIClient, repo: str) -> None:
    image = make_image((1000, 1000), seed=37)
    await client.push_blobs(repo, image.blobs[:-1])
    reply = await client.put_manifest(repo, "broken", image.manifest)
    reply.expect_error(400, "MANIFEST_BLOB_UNKNOWN")
    (await client.manifest(repo, "broken")).expect_error(404, "MANIFEST_UNKNOWN")
    (await client.manifest(repo, image.digest)).expect_error(404, "MANIFEST_UNKNOWN")


async def test_blob_of_another_repository_does_not_count(client: OCIClient, repo: str) -> None:
    image = make_image((1000,), seed=38)
    await client.push_blobs(f"{repo}-elsewhere", image.blobs)
    reply = await client.put_manifest(repo, "v1", image.manifest)
    reply.expect_error(400, "MANIFEST_BLOB_UNKNOWN")


async def test_index_referencing_a_missing_child_manifest(client: OCIClient, repo: str) -> None:
    index = make_multiplatform((100,), seed=39)
    await client.push_image(repo, index.images[0])
    await client.push_blobs(repo, index.images[1].blobs)  # blobs but not the manifest
    reply = await client.put_manifest(repo, "multi", index.manifest)
    reply.expect_error(400, "MANIFEST_BLOB_UNKNOWN")
    (await client.manifest(repo, "multi")).expect_error(404, "MANIFEST_UNKNOWN")


async def test_content_type_contradicting_the_manifest(client: OCIClient, repo: str) -> None:
    image = make_image((100,), seed=40)
    await client.push_blobs(repo, image.blobs)
    reply = await client.put_manifest(repo, "v1", Blob(DOCKER_MANIFEST, image.manifest.data))
    reply.expect_error(400, "MANIFEST_INVALID")


async def test_subject_answers_oci_subject_and_lists_referrers(
    client: OCIClient, repo: str
) -> None:
    image = make_image((100,), seed=41)
    await client.push_image(repo, image, "app")
    signature = make_artifact(image.manifest, SIGNATURE, b"sig", {"org.example.kind": "sig"})
    sbom = make_artifact(image.manifest, SBOM, b"sbom")
    for artifact in (signature, sbom):
        await client.push_blobs(repo, artifact.blobs)
        reply = await client.put_manifest(repo, artifact.digest, artifact.manifest)
        assert reply.status == 201
        assert reply.headers["OCI-Subject"] == image.digest

    reply = await client.request("GET", f"/v2/{repo}/referrers/{image.digest}")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith(OCI_INDEX)
    assert "OCI-Filters-Applied" not in reply.headers
    index = reply.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert set(by_digest) == {signature.digest, sbom.digest}
    assert by_digest[signature.digest] == {
        "mediaType": OCI_MANIFEST,
        "digest": signature.digest,
        "size": signature.manifest.size,
        "artifactType": SIGNATURE,
        "annotations": {"org.example.kind": "sig"},
    }
    assert by_digest[sbom.digest]["artifactType"] == SBOM

    reply = await client.request("GET", f"/v2/{repo}/referrers/{image.digest}?artifactType={SBOM}")
    assert reply.status == 200
    assert reply.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in reply.json()["manifests"]] == [sbom.digest]

    # Deleting a referrer takes it out of the list.
    assert (await client.request("DELETE", f"/v2/{repo}/manifests/{sbom.digest}")).status == 202
    reply = await client.request("GET", f"/v2/{repo}/referrers/{image.digest}")
    assert [d["digest"] for d in reply.json()["manifests"]] == [signature.digest]


async def test_referrers_of_a_manifest_without_any(client: OCIClient, repo: str) -> None:
    image = make_image((100,), seed=42)
    await client.push_image(repo, image, "v1")
    for subject in (image.digest, "sha256:" + "a" * 64):
        reply = await client.request("GET", f"/v2/{repo}/referrers/{subject}")
        assert reply.status == 200
        assert reply.json()["manifests"] == []


async def test_subject_may_be_absent_from_the_registry(client: OCIClient, repo: str) -> None:
    """The spec lets a referrer be pushed before its subject."""
    subject = make_image((100,), seed=43)
    signature = make_artifact(subject.manifest, SIGNATURE)
    await client.push_blobs(repo, signature.blobs)
    reply = await client.put_manifest(repo, signature.digest, signature.manifest)
    assert reply.status == 201
    assert reply.headers["OCI-Subject"] == subject.digest
    reply = await client.request("GET", f"/v2/{repo}/referrers/{subject.digest}")
    assert [d["digest"] for d in reply.json()["manifests"]] == [signature.digest]


async def test_delete_by_tag_keeps_the_manifest(client: OCIClient, repo: str) -> None:
    image = make_image((100,), seed=44)
    await client.push_image(repo, image, "a")
    await client.put_manifest(repo, "b", image.manifest)
    reply = await client.request("DELETE", f"/v2/{repo}/manifests/a")
    assert reply.status == 202
    (await client.manifest(repo, "a")).expect_error(404, "MANIFEST_UNKNOWN")
    assert (await client.manifest(repo, "b")).status == 200
    assert (await client.manifest(repo, image.digest)).status == 200
    assert (await client.request("GET", f"/v2/{repo}/tags/list")).json()["tags"] == ["b"]
    again = await client.request("DELETE", f"/v2/{repo}/manifests/a")
    again.expect_error(404, "MANIFEST_UNKNOWN")


async def test_delete_by_digest_removes_its_tags(client: OCIClient, repo: str) -> None:
    image, other = make_image((100,), seed=45), make_image((100,), seed=46)
    await client.push_image(repo, image, "a")
    await client.put_manifest(repo, "b", image.manifest)
    await client.push_image(repo, other, "c")
    reply = await client.request("DELETE", f"/v2/{repo}/manifests/{image.digest}")
    assert reply.status == 202
    for reference in ("a", "b", image.digest):
        (await client.manifest(repo, reference)).expect_error(404, "MANIFEST_UNKNOWN")
        head = await client.request("HEAD", f"/v2/{repo}/manifests/{reference}")
        assert head.status == 404
    assert (await client.request("GET", f"/v2/{repo}/tags/list")).json()["tags"] == ["c"]
    again = await client.request("DELETE", f"/v2/{repo}/manifests/{image.digest}")
    again.expect_error(404, "MANIFEST_UNKNOWN")


async def test_unknown_manifests(client: OCIClient, repo: str) -> None:
    await client.push_image(repo, make_image((100,), seed=47), "v1")
    (await client.manifest(repo, "nope")).expect_error(404, "MANIFEST_UNKNOWN")
    (await client.manifest(repo, "sha256:" + "b" * 64)).expect_error(404, "MANIFEST_UNKNOWN")
    assert (await client.request("HEAD", f"/v2/{repo}/manifests/nope")).status == 404


async def test_manifest_of_another_repository_is_not_visible(client: OCIClient, repo: str) -> None:
    image = make_image((100,), seed=48)
    await client.push_image(repo, image, "v1")
    await client.push_image(f"{repo}-b", make_image((100,), seed=49), "v1")
    (await client.manifest(f"{repo}-b", image.digest)).expect_error(404, "MANIFEST_UNKNOWN")


async def test_manifest_with_annotations_and_unknown_fields_is_kept_byte_for_byte(
    client: OCIClient, repo: str
) -> None:
    image = make_image((100,), seed=50)
    await client.push_blobs(repo, image.blobs)
    doc = json.loads(image.manifest.data)
    doc["annotations"] = {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    doc["x-extension"] = {"kept": True}
    # Not canonical on purpose: indentation and key order must survive.
    data = json.dumps(doc, indent=3).encode()
    reply = await client.put_manifest(repo, "pretty", Blob(OCI_MANIFEST, data))
    assert reply.status == 201
    got = await client.manifest(repo, "pretty")
    assert got.body == data
    assert got.headers["Docker-Content-Digest"] == Blob(OCI_MANIFEST, data).digest


async def test_referrer_artifact_type_follows_the_spec(client: OCIClient, repo: str) -> None:
    subject = make_image((100,), seed=51)
    await client.push_image(repo, subject, "app")
    # An image manifest without artifactType: the config's media type stands in.
    plain = make_image((10,), seed=52, subject=subject.manifest)
    await client.push_image(repo, plain)
    # An index with a subject and no artifactType: the descriptor has none.
    child = make_image((10,), seed=53)
    await client.push_image(repo, child)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [child.manifest.descriptor()],
        "subject": subject.manifest.descriptor(),
    }
    index = Blob(OCI_INDEX, canonical_json(doc))
    typed_doc = {**doc, "artifactType": SBOM}
    typed_index = Blob(OCI_INDEX, canonical_json(typed_doc))
    for manifest in (index, typed_index):
        reply = await client.put_manifest(repo, manifest.digest, manifest)
        assert reply.status == 201, reply.body
        assert reply.headers["OCI-Subject"] == subject.digest

    reply = await client.request("GET", f"/v2/{repo}/referrers/{subject.digest}")
    by_digest = {d["digest"]: d for d in reply.json()["manifests"]}
    assert set(by_digest) == {plain.digest, index.digest, typed_index.digest}
    assert by_digest[plain.digest]["artifactType"] == plain.config.media_type
    assert "artifactType" not in by_digest[index.digest]
    assert by_digest[index.digest]["mediaType"] == OCI_INDEX
    assert by_digest[typed_index.digest]["artifactType"] == SBOM
    reply = await client.request(
        "GET",
        f"/v2/{repo}/referrers/{subject.digest}?artifactType={quote(plain.config.media_type)}",
    )
    assert [d["digest"] for d in reply.json()["manifests"]] == [plain.digest]
    assert reply.headers["OCI-Filters-Applied"] == "artifactType"


async def test_concurrent_pushes_of_one_tag(client: OCIClient, repo: str) -> None:
    images = [make_image((100,), seed=60 + i) for i in range(6)]
    for image in images:
        await client.push_blobs(repo, image.blobs)
    replies = await asyncio.gather(
        *(client.put_manifest(repo, "race", image.manifest) for image in images)
    )
    assert [r.status for r in replies] == [201] * len(images)
    got = await client.manifest(repo, "race")
    assert got.status == 200
    # The tag names one whole manifest, and every one of them is stored.
    winner = got.headers["Docker-Content-Digest"]
    assert got.body == {i.digest: i.manifest.data for i in images}[winner]
    for image in images:
        assert (await client.manifest(repo, image.digest)).body == image.manifest.data


async def test_foreign_layers_need_not_be_in_the_registry(client: OCIClient, repo: str) -> None:
    image = make_image((100,), seed=70, docker=True)
    await client.push_blobs(repo, image.blobs)
    doc = json.loads(image.manifest.data)
    doc["layers"].append(
        {
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "digest": "sha256:" + "f" * 64,
            "size": 12345,
            "urls": ["https://example.invalid/layer.tar.gz"],
        }
    )
    manifest = Blob(DOCKER_MANIFEST, canonical_json(doc))
    reply = await client.put_manifest(repo, "windows", manifest)
    assert reply.status == 201, reply.body
    assert (await client.manifest(repo, "windows", [DOCKER_MANIFEST])).body == manifest.data
