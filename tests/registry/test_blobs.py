"""The version check and blobs: HEAD, GET, single Range reads, DELETE, per-repository links."""

from __future__ import annotations

import hashlib

from tests.fixtures.images import make_blob
from tests.registry.oci_client import OCIClient


async def test_version_check_announces_the_api(client: OCIClient) -> None:
    reply = await client.request("GET", "/v2/")
    assert reply.status == 200
    assert reply.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert reply.json() == {}


async def test_head_and_get_return_the_blob_with_its_digest(client: OCIClient, repo: str) -> None:
    blob = make_blob(300_000, seed=1)
    await client.push_blob(repo, blob.data)

    head = await client.request("HEAD", f"/v2/{repo}/blobs/{blob.digest}")
    assert head.status == 200
    assert head.headers["Docker-Content-Digest"] == blob.digest
    assert int(head.headers["Content-Length"]) == blob.size
    assert head.body == b""

    got = await client.blob(repo, blob.digest)
    assert got.status == 200
    assert got.headers["Docker-Content-Digest"] == blob.digest
    assert int(got.headers["Content-Length"]) == blob.size
    assert got.body == blob.data


async def test_empty_blob(client: OCIClient, repo: str) -> None:
    digest = await client.push_blob(repo, b"")
    got = await client.blob(repo, digest)
    assert got.status == 200
    assert got.body == b""
    assert got.headers["Docker-Content-Digest"] == digest
    # Clients that always resume with `Range: bytes=0-` still get the (empty) blob.
    got = await client.blob(repo, digest, headers={"Range": "bytes=0-"})
    assert got.status == 200
    assert got.body == b""
    assert got.headers["Content-Length"] == "0"


async def test_sha512_blobs_are_supported(client: OCIClient, repo: str) -> None:
    data = make_blob(5000, seed=2).data
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    await client.push_blob(repo, data, digest)
    got = await client.blob(repo, digest)
    assert got.status == 200
    assert got.body == data
    assert got.headers["Docker-Content-Digest"] == digest


async def test_unknown_blob(client: OCIClient, repo: str) -> None:
    await client.push_blob(repo, b"something")
    missing = "sha256:" + "0" * 64
    head = await client.request("HEAD", f"/v2/{repo}/blobs/{missing}")
    assert head.status == 404
    (await client.blob(repo, missing)).expect_error(404, "BLOB_UNKNOWN")


async def test_blob_is_only_visible_in_repositories_that_link_it(
    client: OCIClient, repo: str
) -> None:
    blob = make_blob(1000, seed=3)
    await client.push_blob(repo, blob.data)
    other = f"{repo}-other"
    await client.push_blob(other, b"unrelated")
    (await client.blob(other, blob.digest)).expect_error(404, "BLOB_UNKNOWN")
    assert (await client.blob(repo, blob.digest)).status == 200


async def test_range_reads(client: OCIClient, repo: str) -> None:
    blob = make_blob(100_000, seed=4)
    await client.push_blob(repo, blob.data)
    for header, first, last in [
        ("bytes=0-0", 0, 0),
        ("bytes=10-1009", 10, 1009),
        ("bytes=99000-", 99000, 99999),
        ("bytes=-500", 99500, 99999),
        ("bytes=99990-200000", 99990, 99999),
    ]:
        got = await client.blob(repo, blob.digest, headers={"Range": header})
        assert got.status == 206, header
        assert got.body == blob.data[first : last + 1], header
        assert got.headers["Content-Range"] == f"bytes {first}-{last}/{blob.size}", header
        assert int(got.headers["Content-Length"]) == last - first + 1


async def test_range_outside_the_blob_is_416_with_a_json_error(
    client: OCIClient, repo: str
) -> None:
    blob = make_blob(1000, seed=5)
    await client.push_blob(repo, blob.data)
    for header in ["bytes=1000-", "bytes=5000-6000", "bytes=20-10", "bytes=-0", "lines=0-1"]:
        got = await client.blob(repo, blob.digest, headers={"Range": header})
        got.expect_error(416, "RANGE_INVALID")
        assert got.headers["Content-Range"] == "bytes */1000", header


async def test_delete_unlinks_the_blob_from_the_repository(client: OCIClient, repo: str) -> None:
    blob = make_blob(2000, seed=6)
    await client.push_blob(repo, blob.data)
    other = f"{repo}-keeps"
    await client.push_blob(other, blob.data)

    reply = await client.request("DELETE", f"/v2/{repo}/blobs/{blob.digest}")
    assert reply.status == 202
    assert reply.headers["Docker-Content-Digest"] == blob.digest
    (await client.blob(repo, blob.digest)).expect_error(404, "BLOB_UNKNOWN")
    assert (await client.request("HEAD", f"/v2/{repo}/blobs/{blob.digest}")).status == 404
    # Content is shared: the other repository still has it.
    assert (await client.blob(other, blob.digest)).body == blob.data

    again = await client.request("DELETE", f"/v2/{repo}/blobs/{blob.digest}")
    again.expect_error(404, "BLOB_UNKNOWN")


async def test_blob_of_an_unknown_repository(client: OCIClient) -> None:
    digest = "sha256:" + "1" * 64
    (await client.blob("never/pushed", digest)).expect_error(404, "BLOB_UNKNOWN")
