"""Malformed requests: each one gets the spec's error and stores nothing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.fixtures.images import (
    OCI_MANIFEST,
    Blob,
    make_artifact,
    make_blob,
    make_image,
    sha256,
)
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import (
    OCIClient,
    Reply,
    raw_body,
    raw_status,
    read_response,
    send_raw,
)
from tests.registry.store import Store

MD5_DIGEST = "md5:" + "0" * 32


@pytest.fixture
def unchanged(store: Store) -> Iterator[None]:
    """The test's requests leave no file behind: no blob, link, session or temporary file
    (or, on S3, no object and no open multipart upload)."""
    before = store.snapshot()
    yield
    assert store.snapshot() == before


def wait_logged(registry: RegistryProcess, request_id: str, timeout: float = 20.0) -> None:
    """Until the access log has the request: the server is done with it."""
    deadline = time.monotonic() + timeout
    while request_id not in registry.log_text():
        assert time.monotonic() < deadline, f"request {request_id} never finished"
        time.sleep(0.05)


async def _open_session(client: OCIClient, repo: str, data: bytes) -> str:
    location = await client.start_upload(repo)
    if data:
        assert (await client.patch(location, data, 0)).status == 202
    return location


# -- digests ------------------------------------------------------------------------------


async def test_wrong_digest_on_a_monolithic_upload(
    client: OCIClient, repo: str, store: Store
) -> None:
    await client.push_blob(repo, b"seed")  # the repository exists before the snapshot
    before = store.snapshot()
    blob, other = make_blob(5000, seed=60), make_blob(5000, seed=61)
    reply = await client.request(
        "POST", f"/v2/{repo}/blobs/uploads/?digest={other.digest}", data=blob.data
    )
    reply.expect_error(400, "DIGEST_INVALID")
    for digest in (blob.digest, other.digest):
        (await client.blob(repo, digest)).expect_error(404, "BLOB_UNKNOWN")
    assert store.snapshot() == before


async def test_wrong_digest_when_closing_a_chunked_upload(
    client: OCIClient, repo: str, store: Store
) -> None:
    before = store.snapshot()
    blob = make_blob(5000, seed=62)
    location = await _open_session(client, repo, blob.data)
    reply = await client.finish(location, sha256(b"something else"))
    reply.expect_error(400, "DIGEST_INVALID")
    (await client.blob(repo, blob.digest)).expect_error(404, "BLOB_UNKNOWN")
    assert store.snapshot() == before
    assert store.upload_sessions(repo) == []


@pytest.mark.parametrize(
    "digest",
    [
        MD5_DIGEST,
        "sha256:" + "0" * 63,  # too short
        "sha256:" + "G" * 64,  # not hex
        "sha512:" + "0" * 64,  # a sha256 length under sha512
        "sha256",
        "nothing-like-a-digest",
    ],
)
async def test_unsupported_or_malformed_digest_on_upload(
    client: OCIClient, repo: str, digest: str, unchanged: None
) -> None:
    reply = await client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data=b"x")
    _expect_digest_refused(reply)


async def test_unsupported_digest_when_closing_an_upload(
    client: OCIClient, repo: str, store: Store
) -> None:
    location = await _open_session(client, repo, b"abc")
    before = store.snapshot()
    _expect_digest_refused(await client.finish(location, MD5_DIGEST))
    assert store.snapshot() == before


async def test_unsupported_digest_in_reads(client: OCIClient, repo: str, unchanged: None) -> None:
    for path in (
        f"/v2/{repo}/blobs/{MD5_DIGEST}",
        f"/v2/{repo}/manifests/{MD5_DIGEST}",
        f"/v2/{repo}/referrers/{MD5_DIGEST}",
        f"/v2/{repo}/blobs/sha256:nothex",
    ):
        _expect_digest_refused(await client.request("GET", path))


def _expect_digest_refused(reply: Reply) -> None:
    # As Distribution does, and within the spec's 400/404 for these endpoints.
    reply.expect_error(400, "DIGEST_INVALID")


# -- bodies that do not match their Content-Length ------------------------------------------


async def test_body_shorter_than_content_length_on_a_monolithic_upload(
    client: OCIClient, repo: str, module_registry: RegistryProcess, store: Store
) -> None:
    await client.push_blob(repo, b"seed")
    before = store.snapshot()
    blob = make_blob(3 << 20, seed=63)
    request_id = uuid.uuid4().hex
    head = (
        f"POST /v2/{repo}/blobs/uploads/?digest={blob.digest} HTTP/1.1\r\n"
        f"Host: {module_registry.host}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {blob.size}\r\nX-Request-Id: {request_id}\r\n\r\n"
    ).encode()
    # Most of the body (past the first 1 MiB written to disk), then the client hangs up.
    await send_raw("127.0.0.1", module_registry.port, head + blob.data[: 5 << 19], read_reply=False)
    await asyncio.to_thread(wait_logged, module_registry, request_id)
    (await client.blob(repo, blob.digest)).expect_error(404, "BLOB_UNKNOWN")
    assert store.snapshot() == before
    assert (await client.request("GET", "/v2/")).status == 200


async def test_body_shorter_than_content_length_on_a_chunk(
    client: OCIClient, repo: str, module_registry: RegistryProcess, store: Store
) -> None:
    blob = make_blob(4 << 20, seed=64)
    location = await _open_session(client, repo, blob.data[:1000])
    before = store.snapshot()
    request_id = uuid.uuid4().hex
    chunk = blob.data[1000:]
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: {module_registry.host}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Range: 1000-{blob.size - 1}\r\n"
        f"Content-Length: {len(chunk)}\r\nX-Request-Id: {request_id}\r\n\r\n"
    ).encode()
    await send_raw("127.0.0.1", module_registry.port, head + chunk[: 5 << 19], read_reply=False)
    await asyncio.to_thread(wait_logged, module_registry, request_id)
    assert store.snapshot() == before
    # The session is where it was, and the client can send the chunk again.
    status = await client.request("GET", location)
    assert status.headers["Range"] == "0-999"
    assert (await client.patch(location, chunk, 1000)).status == 202
    assert (await client.finish(location, blob.digest)).status == 201
    assert (await client.blob(repo, blob.digest)).body == blob.data


async def test_body_longer_than_content_length(
    client: OCIClient, repo: str, module_registry: RegistryProcess, store: Store
) -> None:
    """The server reads Content-Length bytes; the rest is no request of HTTP's."""
    await client.push_blob(repo, b"seed")
    before = store.snapshot()
    blob = make_blob(10_000, seed=65)
    head = (
        f"POST /v2/{repo}/blobs/uploads/?digest={blob.digest} HTTP/1.1\r\n"
        f"Host: {module_registry.host}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {blob.size - 100}\r\n\r\n"
    ).encode()
    # All at once: the surplus arrives as a malformed pipelined request.
    response = await send_raw("127.0.0.1", module_registry.port, head + blob.data)
    assert raw_status(response) == 400
    assert store.snapshot() == before

    # The surplus after the answer: the declared bytes are not the blob the digest names.
    reader, writer = await asyncio.open_connection("127.0.0.1", module_registry.port)
    try:
        writer.write(head + blob.data[:-100])
        response = await read_response(reader)
        assert raw_status(response) == 400
        assert [e["code"] for e in json.loads(raw_body(response))["errors"]] == ["DIGEST_INVALID"]
        writer.write(blob.data[-100:])
        assert raw_status(await read_response(reader)) == 400
    finally:
        writer.close()
    for digest in (blob.digest, sha256(blob.data[:-100])):
        (await client.blob(repo, digest)).expect_error(404, "BLOB_UNKNOWN")
    assert store.snapshot() == before


async def test_chunk_whose_content_range_and_length_disagree(
    client: OCIClient, repo: str, store: Store
) -> None:
    location = await _open_session(client, repo, b"a" * 100)
    before = store.snapshot()
    reply = await client.request(
        "PATCH",
        location,
        data=b"b" * 50,
        headers={"Content-Range": "100-199", "Content-Type": "application/octet-stream"},
    )
    reply.expect_error(400, "SIZE_INVALID")
    assert store.snapshot() == before
    assert (await client.request("GET", location)).headers["Range"] == "0-99"


async def test_streamed_chunk_shorter_than_its_content_range(
    client: OCIClient, repo: str, store: Store
) -> None:
    """Without Content-Length (chunked transfer), the Content-Range still binds the chunk."""
    location = await _open_session(client, repo, b"a" * 100)
    before = store.snapshot()

    async def body() -> AsyncIterator[bytes]:
        yield b"b" * 30
        yield b"b" * 20

    reply = await client.request(
        "PATCH",
        location,
        data=body(),
        headers={"Content-Range": "100-199", "Content-Type": "application/octet-stream"},
    )
    reply.expect_error(400, "SIZE_INVALID")
    assert store.snapshot() == before
    assert (await client.request("GET", location)).headers["Range"] == "0-99"


async def test_out_of_order_chunks_store_nothing(
    client: OCIClient, repo: str, store: Store
) -> None:
    location = await _open_session(client, repo, b"a" * 100)
    before = store.snapshot()
    for first, size in ((0, 100), (50, 100), (101, 10), (200, 10), (100, 0)):
        reply = await client.request(
            "PATCH",
            location,
            data=b"c" * size,
            headers={"Content-Range": f"{first}-{first + size - 1}"},
        )
        reply.expect_error(416, "RANGE_INVALID")
        assert reply.headers["Range"] == "0-99"
        assert store.snapshot() == before


async def test_body_without_a_digest_is_not_an_upload(
    client: OCIClient, repo: str, unchanged: None
) -> None:
    reply = await client.request("POST", f"/v2/{repo}/blobs/uploads/", data=b"stray body")
    reply.expect_error(400, "BLOB_UPLOAD_INVALID")


async def test_closing_an_upload_without_a_digest(
    client: OCIClient, repo: str, store: Store
) -> None:
    location = await _open_session(client, repo, b"abc")
    before = store.snapshot()
    reply = await client.request("PUT", location, data=b"def")
    reply.expect_error(400, "DIGEST_INVALID")
    assert store.snapshot() == before


# -- manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"this is not json", OCI_MANIFEST),
        (b'{"schemaVersion": 2, "mediaType": ', OCI_MANIFEST),
        (b"\xff\xfe\x00garbage", OCI_MANIFEST),
        (b"[1, 2, 3]", OCI_MANIFEST),
        (b"", OCI_MANIFEST),
        (json.dumps({"schemaVersion": 3, "config": {}, "layers": []}).encode(), OCI_MANIFEST),
        (
            json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(),
            OCI_MANIFEST,
        ),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "x", "digest": "sha256:abc", "size": 1},
                    "layers": [],
                }
            ).encode(),
            OCI_MANIFEST,
        ),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "layers": [],
                }
            ).encode(),
            "application/vnd.oci.image.layer.v1.tar",
        ),
    ],
    ids=[
        "text",
        "truncated",
        "binary",
        "array",
        "empty",
        "schema3",
        "no-config",
        "bad-digest",
        "not-a-manifest-type",
    ],
)
async def test_invalid_manifests(
    client: OCIClient, repo: str, body: bytes, content_type: str, unchanged: None
) -> None:
    reply = await client.put_manifest(repo, "bad", Blob(content_type, body))
    reply.expect_error(400, "MANIFEST_INVALID")
    (await client.manifest(repo, "bad")).expect_error(404, "MANIFEST_UNKNOWN")


async def test_manifest_body_shorter_or_longer_than_content_length(
    client: OCIClient, repo: str, module_registry: RegistryProcess, store: Store
) -> None:
    image = make_image((10,), seed=75)
    await client.push_blobs(repo, image.blobs)
    before = store.snapshot()
    data = image.manifest.data

    def head(length: int, request_id: str) -> bytes:
        return (
            f"PUT /v2/{repo}/manifests/v1 HTTP/1.1\r\nHost: {module_registry.host}\r\n"
            f"Content-Type: {OCI_MANIFEST}\r\nContent-Length: {length}\r\n"
            f"X-Request-Id: {request_id}\r\n\r\n"
        ).encode()

    # Shorter: the client hangs up before the declared length arrived.
    request_id = uuid.uuid4().hex
    await send_raw(
        "127.0.0.1",
        module_registry.port,
        head(len(data), request_id) + data[:-50],
        read_reply=False,
    )
    await asyncio.to_thread(wait_logged, module_registry, request_id)
    # Longer: the server reads the declared length, which is no longer the whole document.
    reader, writer = await asyncio.open_connection("127.0.0.1", module_registry.port)
    try:
        writer.write(head(len(data) - 50, uuid.uuid4().hex) + data[:-50])
        response = await read_response(reader)
        assert raw_status(response) == 400
        assert [e["code"] for e in json.loads(raw_body(response))["errors"]] == ["MANIFEST_INVALID"]
    finally:
        writer.close()
    (await client.manifest(repo, "v1")).expect_error(404, "MANIFEST_UNKNOWN")
    (await client.manifest(repo, image.digest)).expect_error(404, "MANIFEST_UNKNOWN")
    assert store.snapshot() == before


async def test_manifest_referencing_missing_blobs_stores_nothing(
    client: OCIClient, repo: str, store: Store
) -> None:
    image = make_image((1000, 1000), seed=66)
    await client.push_blobs(repo, image.blobs[1:])  # all but the config
    before = store.snapshot()
    reply = await client.put_manifest(repo, "v1", image.manifest)
    reply.expect_error(400, "MANIFEST_BLOB_UNKNOWN")
    assert store.snapshot() == before
    (await client.manifest(repo, image.digest)).expect_error(404, "MANIFEST_UNKNOWN")


async def test_manifest_over_4_mib_is_413(client: OCIClient, repo: str, unchanged: None) -> None:
    image = make_image((10,), seed=67)
    doc = json.loads(image.manifest.data)
    doc["annotations"] = {"padding": "x" * (4 * 1024 * 1024)}
    big = json.dumps(doc).encode()
    reply = await client.put_manifest(repo, "big", Blob(OCI_MANIFEST, big))
    assert reply.status == 413
    assert reply.error_codes  # a JSON error body

    async def streamed() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    # The same without Content-Length: the limit holds on what arrives.
    reply = await client.request(
        "PUT", f"/v2/{repo}/manifests/big", data=streamed(), headers={"Content-Type": OCI_MANIFEST}
    )
    assert reply.status == 413
    (await client.manifest(repo, "big")).expect_error(404, "MANIFEST_UNKNOWN")


async def test_manifest_of_exactly_4_mib_is_accepted(client: OCIClient, repo: str) -> None:
    image = make_image((10,), seed=68)
    await client.push_blobs(repo, image.blobs)
    doc = json.loads(image.manifest.data)
    doc["annotations"] = {"padding": ""}
    size = len(json.dumps(doc).encode())
    doc["annotations"]["padding"] = "x" * (4 * 1024 * 1024 - size)
    data = json.dumps(doc).encode()
    assert len(data) == 4 * 1024 * 1024
    reply = await client.put_manifest(repo, "big", Blob(OCI_MANIFEST, data))
    assert reply.status == 201, reply.body
    assert (await client.manifest(repo, "big")).body == data


async def test_manifest_digest_mismatch_on_put_by_digest(
    client: OCIClient, repo: str, store: Store
) -> None:
    image, other = make_image((10,), seed=69), make_image((10,), seed=70)
    await client.push_blobs(repo, image.blobs)
    before = store.snapshot()
    reply = await client.put_manifest(repo, other.digest, image.manifest)
    reply.expect_error(400, "DIGEST_INVALID")
    assert store.snapshot() == before
    for digest in (image.digest, other.digest):
        (await client.manifest(repo, digest)).expect_error(404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("tag", ["-leading-dash", ".dot", "x" * 129, "sp ace", "a%2Fb"])
async def test_invalid_tags(client: OCIClient, repo: str, store: Store, tag: str) -> None:
    image = make_image((10,), seed=71)
    await client.push_blobs(repo, image.blobs)
    before = store.snapshot()
    reply = await client.request(
        "PUT",
        f"/v2/{repo}/manifests/{tag.replace(' ', '%20')}",
        data=image.manifest.data,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert reply.status == 400, reply.body
    # TAG_INVALID is Distribution's code for it; MANIFEST_INVALID the nearest of the spec's.
    assert set(reply.error_codes) & {"TAG_INVALID", "MANIFEST_INVALID"}
    assert store.snapshot() == before


async def test_manifest_with_a_sha512_reference(client: OCIClient, repo: str) -> None:
    import hashlib

    image = make_image((10,), seed=72)
    await client.push_blobs(repo, image.blobs)
    digest = "sha512:" + hashlib.sha512(image.manifest.data).hexdigest()
    reply = await client.put_manifest(repo, digest, image.manifest)
    assert reply.status == 201, reply.body
    assert reply.headers["Docker-Content-Digest"] == digest
    got = await client.manifest(repo, digest)
    assert got.body == image.manifest.data
    assert got.headers["Docker-Content-Digest"] == digest


# -- names ----------------------------------------------------------------------------------

BAD_NAMES = ["../x", "A/B", "a//b", "a" * 300, "a/", "-a", "a/.b", "a__-b", "a/_uploads/b"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: n if len(n) < 20 else f"{len(n)}chars")
async def test_invalid_names(client: OCIClient, name: str, unchanged: None) -> None:
    blob = make_blob(100, seed=73)
    image = make_image((10,), seed=73)
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"/v2/{name}/blobs/uploads/", {}),
        ("POST", f"/v2/{name}/blobs/uploads/?digest={blob.digest}", {"data": blob.data}),
        (
            "PUT",
            f"/v2/{name}/manifests/latest",
            {"data": image.manifest.data, "headers": {"Content-Type": OCI_MANIFEST}},
        ),
        ("GET", f"/v2/{name}/manifests/latest", {}),
        ("GET", f"/v2/{name}/blobs/{blob.digest}", {}),
        ("GET", f"/v2/{name}/tags/list", {}),
        ("DELETE", f"/v2/{name}/manifests/latest", {}),
    ]
    for method, path, kwargs in requests:
        reply = await client.request(method, path, **kwargs)
        reply.expect_error(400, "NAME_INVALID")


async def test_a_255_character_name_is_valid(client: OCIClient) -> None:
    name = "/".join(["n" * 50] * 4) + "/" + "a" * 51
    assert len(name) == 255
    digest = await client.push_blob(name, b"long name")
    assert (await client.blob(name, digest)).body == b"long name"
    reply = await client.request("POST", f"/v2/{name}x/blobs/uploads/")
    reply.expect_error(400, "NAME_INVALID")


async def test_invalid_mount_source(client: OCIClient, repo: str, unchanged: None) -> None:
    digest = sha256(b"x")
    reply = await client.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from=A/B")
    reply.expect_error(400, "NAME_INVALID")


# -- upload ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "upload_id",
    [
        "4d2a4b3818454929a11753c893ddba37",
        "15f28cb1-74c8-4358-a958-33dda0f0f358",
        "nope",
        "0" * 32,
        "%2E%2E",
        "A" * 32,
    ],
)
async def test_unknown_upload_ids(
    client: OCIClient, repo: str, upload_id: str, unchanged: None
) -> None:
    location = f"/v2/{repo}/blobs/uploads/{upload_id}"
    digest = sha256(b"abc")
    for method, path, data in [
        ("GET", location, None),
        ("PATCH", location, b"abc"),
        ("PUT", f"{location}?digest={digest}", b"abc"),
        ("DELETE", location, None),
    ]:
        reply = await client.request(method, path, data=data)
        reply.expect_error(404, "BLOB_UPLOAD_UNKNOWN")


async def test_upload_id_of_another_repository(client: OCIClient, repo: str, store: Store) -> None:
    location = await _open_session(client, repo, b"abc")
    before = store.snapshot()
    elsewhere = location.replace(f"/v2/{repo}/", f"/v2/{repo}-other/")
    (await client.request("GET", elsewhere)).expect_error(404, "BLOB_UPLOAD_UNKNOWN")
    (await client.patch(elsewhere, b"def", 3)).expect_error(404, "BLOB_UPLOAD_UNKNOWN")
    (await client.finish(elsewhere, sha256(b"abc"))).expect_error(404, "BLOB_UPLOAD_UNKNOWN")
    assert store.snapshot() == before


# -- a repository that only ever saw refused requests ---------------------------------------


async def test_refused_pushes_do_not_create_the_repository(client: OCIClient, repo: str) -> None:
    blob = make_blob(100, seed=74)
    reply = await client.request(
        "POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(b'other')}", data=blob.data
    )
    reply.expect_error(400, "DIGEST_INVALID")
    (await client.request("GET", f"/v2/{repo}/tags/list")).expect_error(404, "NAME_UNKNOWN")
    catalog = (await client.request("GET", "/v2/_catalog")).json()["repositories"]
    assert repo not in catalog


# -- methods --------------------------------------------------------------------------------


async def test_methods_an_endpoint_does_not_have(
    client: OCIClient, repo: str, unchanged: None
) -> None:
    digest = sha256(b"x")
    for method, path, allowed in [
        ("PUT", f"/v2/{repo}/blobs/{digest}", {"GET", "HEAD", "DELETE"}),
        ("POST", f"/v2/{repo}/manifests/latest", {"GET", "HEAD", "PUT", "DELETE"}),
        ("PATCH", f"/v2/{repo}/blobs/uploads/", {"POST"}),
        ("DELETE", f"/v2/{repo}/tags/list", {"GET"}),
    ]:
        reply = await client.request(method, path)
        reply.expect_error(405, "UNSUPPORTED")
        assert {m.strip() for m in reply.headers["Allow"].split(",")} >= allowed, path


# -- references that no tag can be ----------------------------------------------------------


@pytest.mark.parametrize("reference", [".INVALID_MANIFEST_NAME", "-dash", "x" * 129, "a%2Fb"])
async def test_reading_an_impossible_tag_finds_nothing(
    client: OCIClient, repo: str, reference: str, store: Store
) -> None:
    # A name no tag can have is not there: 404 on reads, as Distribution and the spec's suite.
    await client.push_blob(repo, b"seed")
    before = store.snapshot()
    (await client.manifest(repo, reference)).expect_error(404, "MANIFEST_UNKNOWN")
    head = await client.request("HEAD", f"/v2/{repo}/manifests/{reference}")
    assert head.status == 404
    # Deleting it is a malformed request, as a PUT of it is.
    reply = await client.request("DELETE", f"/v2/{repo}/manifests/{reference}")
    reply.expect_error(400, "TAG_INVALID")
    assert store.snapshot() == before


# -- the last chunk of an upload ------------------------------------------------------------


@pytest.mark.parametrize("first", [0, 50, 101, 200])
async def test_final_chunk_out_of_order_keeps_the_session(
    client: OCIClient, repo: str, store: Store, first: int
) -> None:
    head, tail = b"a" * 100, b"b" * 10
    digest = sha256(head + tail)
    location = await _open_session(client, repo, head)
    before = store.snapshot()
    reply = await client.request(
        "PUT",
        f"{location}?digest={digest}",
        data=tail,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{first}-{first + len(tail) - 1}",
        },
    )
    reply.expect_error(416, "RANGE_INVALID")
    assert reply.headers["Range"] == "0-99"
    assert store.snapshot() == before
    # The session is where it was: the right last chunk completes it.
    reply = await client.request(
        "PUT",
        f"{location}?digest={digest}",
        data=tail,
        headers={"Content-Type": "application/octet-stream", "Content-Range": "100-109"},
    )
    assert reply.status == 201, reply.body
    assert (await client.blob(repo, digest)).body == head + tail


# -- query strings as clients encode them ---------------------------------------------------

SBOM_JSON = "application/vnd.example.sbom.v1+json"


@pytest.mark.parametrize(
    "query",
    [
        "artifactType=application/vnd.example.sbom.v1+json",
        "artifactType=application%2Fvnd.example.sbom.v1%2Bjson",
        "artifactType=application/vnd.example.sbom.v1%2bjson",
        # Repeated: the first counts, as Distribution reads a query.
        "artifactType=application/vnd.example.sbom.v1+json&artifactType=other/x",
    ],
)
async def test_referrers_filter_however_the_plus_is_encoded(
    client: OCIClient, repo: str, query: str
) -> None:
    image = make_image((10,), seed=75)
    await client.push_image(repo, image)
    sbom = make_artifact(image.manifest, SBOM_JSON, b"sbom")
    signature = make_artifact(image.manifest, "application/vnd.example.sig.v1", b"sig")
    for artifact in (sbom, signature):
        await client.push_image(repo, artifact)
    reply = await client.request("GET", f"/v2/{repo}/referrers/{image.digest}?{query}")
    assert reply.status == 200, reply.body
    assert reply.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in reply.json()["manifests"]] == [sbom.digest]


async def test_mount_with_an_encoded_digest(client: OCIClient, repo: str) -> None:
    digest = await client.push_blob(repo, b"mounted through a %3A")
    target = f"{repo}-mount"
    reply = await client.request(
        "POST", f"/v2/{target}/blobs/uploads/?mount={digest.replace(':', '%3A')}&from={repo}"
    )
    assert reply.status == 201, reply.body
    assert reply.headers["Docker-Content-Digest"] == digest
