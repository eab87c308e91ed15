"""Upload sessions: monolithic, POST+PUT, chunked PATCH, status, cancel, restart, mounts."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.images import make_blob, sha256
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient
from tests.registry.store import Store


def _upload_id(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[1].split("?", 1)[0]


async def test_monolithic_post_with_digest(client: OCIClient, repo: str) -> None:
    blob = make_blob(70_000, seed=10)
    reply = await client.request(
        "POST",
        f"/v2/{repo}/blobs/uploads/?digest={blob.digest}",
        data=blob.data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert reply.status == 201
    assert reply.headers["Docker-Content-Digest"] == blob.digest
    assert reply.headers["Location"].endswith(f"/v2/{repo}/blobs/{blob.digest}")
    assert (await client.request("GET", reply.headers["Location"])).body == blob.data


async def test_post_then_put_with_the_whole_body(client: OCIClient, repo: str) -> None:
    blob = make_blob(50_000, seed=11)
    location = await client.start_upload(repo)
    reply = await client.finish(location, blob.digest, blob.data)
    assert reply.status == 201
    assert reply.headers["Docker-Content-Digest"] == blob.digest
    assert (await client.blob(repo, blob.digest)).body == blob.data


async def test_chunked_upload_reports_the_range_after_each_chunk(
    client: OCIClient, repo: str, store: Store
) -> None:
    blob = make_blob(2_500_000, seed=12)
    location = await client.start_upload(repo)
    upload_id = _upload_id(location)
    chunk = 1_000_000
    for first in range(0, blob.size, chunk):
        part = blob.data[first : first + chunk]
        reply = await client.patch(location, part, first)
        assert reply.status == 202, reply.body
        assert reply.headers["Range"] == f"0-{first + len(part) - 1}"
        assert reply.headers["Docker-Upload-UUID"] == upload_id
        location = reply.headers["Location"]
    reply = await client.finish(location, blob.digest)
    assert reply.status == 201, reply.body
    assert (await client.blob(repo, blob.digest)).body == blob.data
    assert store.upload_sessions(repo) == []


async def test_chunks_without_content_range_are_appended_in_order(
    client: OCIClient, repo: str
) -> None:
    blob = make_blob(30_000, seed=13)
    location = await client.start_upload(repo)
    for first in range(0, blob.size, 10_000):
        reply = await client.patch(location, blob.data[first : first + 10_000])
        assert reply.status == 202
        location = reply.headers["Location"]
    assert (await client.finish(location, blob.digest)).status == 201
    assert (await client.blob(repo, blob.digest)).body == blob.data


async def test_put_may_carry_the_last_chunk(client: OCIClient, repo: str) -> None:
    blob = make_blob(20_000, seed=14)
    location = await client.start_upload(repo)
    reply = await client.patch(location, blob.data[:12_000], 0)
    assert reply.status == 202
    reply = await client.finish(reply.headers["Location"], blob.digest, blob.data[12_000:])
    assert reply.status == 201
    assert (await client.blob(repo, blob.digest)).body == blob.data


async def test_chunk_out_of_order_is_416_and_the_upload_carries_on(
    client: OCIClient, repo: str
) -> None:
    blob = make_blob(3000, seed=15)
    location = await client.start_upload(repo)
    assert (await client.patch(location, blob.data[:1000], 0)).status == 202
    for first in (0, 500, 2000):  # a repeat, an overlap and a gap
        reply = await client.patch(location, blob.data[first : first + 1000], first)
        reply.expect_error(416, "RANGE_INVALID")
        # Where the upload really is, so the client can resume.
        assert reply.headers["Range"] == "0-999"
        assert reply.headers["Location"].endswith(_upload_id(location))
    status = await client.request("GET", location)
    assert status.headers["Range"] == "0-999"
    assert (await client.patch(location, blob.data[1000:], 1000)).status == 202
    assert (await client.finish(location, blob.digest)).status == 201
    assert (await client.blob(repo, blob.digest)).body == blob.data


async def test_upload_status(client: OCIClient, repo: str) -> None:
    location = await client.start_upload(repo)
    upload_id = _upload_id(location)
    status = await client.request("GET", location)
    assert status.status == 204
    assert status.headers["Range"] == "0-0"
    assert status.headers["Docker-Upload-UUID"] == upload_id
    assert status.headers["Location"].endswith(f"/v2/{repo}/blobs/uploads/{upload_id}")
    await client.patch(location, b"x" * 1234, 0)
    status = await client.request("GET", location)
    assert status.status == 204
    assert status.headers["Range"] == "0-1233"
    assert status.headers["Docker-Upload-UUID"] == upload_id


async def test_delete_cancels_the_upload(client: OCIClient, repo: str, store: Store) -> None:
    location = await client.start_upload(repo)
    await client.patch(location, b"abc" * 1000, 0)
    assert store.upload_sessions(repo) == [_upload_id(location)]
    reply = await client.request("DELETE", location)
    assert reply.status == 204
    assert store.upload_sessions(repo) == []
    (await client.request("GET", location)).expect_error(404, "BLOB_UPLOAD_UNKNOWN")
    (await client.patch(location, b"more", 3000)).expect_error(404, "BLOB_UPLOAD_UNKNOWN")
    digest = sha256(b"abc" * 1000)
    (await client.finish(location, digest)).expect_error(404, "BLOB_UPLOAD_UNKNOWN")
    (await client.request("DELETE", location)).expect_error(404, "BLOB_UPLOAD_UNKNOWN")


async def test_pushing_a_blob_the_registry_has_already(client: OCIClient, repo: str) -> None:
    blob = make_blob(4000, seed=16)
    await client.push_blob(repo, blob.data)
    await client.push_blob(repo, blob.data)
    location = await client.start_upload(repo)
    assert (await client.finish(location, blob.digest, blob.data)).status == 201
    assert (await client.blob(repo, blob.digest)).body == blob.data


async def test_upload_resumes_after_a_registry_restart(
    registry: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    client = OCIClient(http, registry.url)
    blob = make_blob(3_000_000, seed=17)
    location = await client.start_upload("resume/me")
    assert (await client.patch(location, blob.data[:1_200_000], 0)).status == 202

    registry.restart()
    status = await client.request("GET", location)
    assert status.status == 204
    assert status.headers["Range"] == "0-1199999"
    reply = await client.patch(location, blob.data[1_200_000:2_000_000], 1_200_000)
    assert reply.status == 202
    assert reply.headers["Range"] == "0-1999999"

    registry.restart()
    reply = await client.finish(location, blob.digest, blob.data[2_000_000:])
    assert reply.status == 201, reply.body
    assert (await client.blob("resume/me", blob.digest)).body == blob.data


async def test_cross_repository_mount(client: OCIClient, repo: str, store: Store) -> None:
    blob = make_blob(9000, seed=18)
    source = f"{repo}/source"
    await client.push_blob(source, blob.data)
    target = f"{repo}/target"
    reply = await client.request(
        "POST", f"/v2/{target}/blobs/uploads/?mount={blob.digest}&from={source}"
    )
    assert reply.status == 201
    assert reply.headers["Docker-Content-Digest"] == blob.digest
    assert reply.headers["Location"].endswith(f"/v2/{target}/blobs/{blob.digest}")
    assert (await client.blob(target, blob.digest)).body == blob.data
    assert store.upload_sessions(target) == []


async def test_mount_falls_back_to_an_upload_session(client: OCIClient, repo: str) -> None:
    blob = make_blob(9000, seed=19)
    source = f"{repo}/source"
    await client.push_blob(source, b"not that blob")
    target = f"{repo}/target"
    for query in (
        f"mount={blob.digest}&from={source}",  # the source does not have it
        f"mount={blob.digest}&from={repo}/nowhere",  # the source does not exist
        f"mount={blob.digest}",  # no source at all
    ):
        reply = await client.request("POST", f"/v2/{target}/blobs/uploads/?{query}")
        assert reply.status == 202, query
        assert reply.headers["Docker-Upload-UUID"]
        (await client.blob(target, blob.digest)).expect_error(404, "BLOB_UNKNOWN")
        # The session is a real one: the client pushes the blob through it.
        assert (await client.finish(reply.headers["Location"], blob.digest, blob.data)).status == (
            201
        )
        await client.request("DELETE", f"/v2/{target}/blobs/{blob.digest}")


async def test_chunked_upload_finished_with_a_sha512_digest(client: OCIClient, repo: str) -> None:
    data = make_blob(40_000, seed=20).data
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    location = await client.start_upload(repo)
    reply = await client.patch(location, data[:25_000], 0)
    reply = await client.patch(reply.headers["Location"], data[25_000:], 25_000)
    reply = await client.finish(reply.headers["Location"], digest)
    assert reply.status == 201, reply.body
    assert reply.headers["Docker-Content-Digest"] == digest
    assert (await client.blob(repo, digest)).body == data


async def test_concurrent_pushes_of_the_same_blob(
    client: OCIClient, repo: str, store: Store
) -> None:
    blob = make_blob(1_500_000, seed=21)

    async def push(i: int) -> int:
        location = await client.start_upload(f"{repo}/r{i % 2}")
        reply = await client.patch(location, blob.data[:700_000], 0)
        reply = await client.finish(reply.headers["Location"], blob.digest, blob.data[700_000:])
        return reply.status

    assert await asyncio.gather(*(push(i) for i in range(6))) == [201] * 6
    for name in (f"{repo}/r0", f"{repo}/r1"):
        assert (await client.blob(name, blob.digest)).body == blob.data
        assert store.upload_sessions(name) == []


def _wait_for_file_size(path: Path, size: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= size):
        assert time.monotonic() < deadline, f"{path} never reached {size} bytes"
        time.sleep(0.02)


@pytest.mark.filesystem_only(
    "watches the session's file grow on disk to kill the registry mid-write; on S3 resumption "
    "after a restart is tested in tests/scaleout"
)
async def test_a_crash_mid_upload_leaves_no_blob_and_the_session_resumable(
    registry: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    client = OCIClient(http, registry.url)
    name = "crash/me"
    chunked, whole = make_blob(6 << 20, seed=22), make_blob(6 << 20, seed=23)
    location = await client.start_upload(name)
    assert (await client.patch(location, chunked.data[: 1 << 20], 0)).status == 202
    session_data = registry.data_dir / "repositories" / name / "_uploads"
    session_data = session_data / _upload_id(location) / "data"

    # Two pushes in flight, each with more than a write batch on disk, then SIGKILL.
    patch = await asyncio.open_connection("127.0.0.1", registry.port)
    patch[1].write(
        (
            f"PATCH {location} HTTP/1.1\r\nHost: {registry.host}\r\n"
            f"Content-Range: {1 << 20}-{chunked.size - 1}\r\n"
            f"Content-Length: {chunked.size - (1 << 20)}\r\n\r\n"
        ).encode()
        + chunked.data[1 << 20 : 4 << 20]
    )
    post = await asyncio.open_connection("127.0.0.1", registry.port)
    post[1].write(
        (
            f"POST /v2/{name}/blobs/uploads/?digest={whole.digest} HTTP/1.1\r\n"
            f"Host: {registry.host}\r\nContent-Length: {whole.size}\r\n\r\n"
        ).encode()
        + whole.data[: 3 << 20]
    )
    await asyncio.gather(patch[1].drain(), post[1].drain())
    await asyncio.to_thread(_wait_for_file_size, session_data, 2 << 20)
    registry.kill()
    for _, writer in (patch, post):
        writer.close()
    registry.start()

    for blob in (chunked, whole):
        assert await _status_of_head(client, f"/v2/{name}/blobs/{blob.digest}") == 404
        assert blob.digest not in Store(registry).blob_files()
    # The session holds a prefix of what was sent; the client resumes from where it says.
    status = await client.request("GET", location)
    assert status.status == 204
    offset = int(status.headers["Range"].split("-")[1]) + 1
    assert 2 << 20 <= offset <= 4 << 20
    assert (await client.patch(location, chunked.data[offset:], offset)).status == 202
    assert (await client.finish(location, chunked.digest)).status == 201
    assert (await client.blob(name, chunked.digest)).body == chunked.data


async def _status_of_head(client: OCIClient, path: str) -> int:
    return (await client.request("HEAD", path)).status


async def test_concurrent_chunks_on_one_session_never_interleave(
    module_registry: RegistryProcess,
) -> None:
    """Two PATCHes racing on one session: one lands, the other is refused, the data is whole."""
    registry_url = module_registry.url
    name = "race/chunks"
    first, second = b"a" * (3 << 20), b"b" * (3 << 20)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{registry_url}/v2/{name}/blobs/uploads/") as resp:
            assert resp.status == 202
            location = resp.headers["Location"]
        url = f"{registry_url}{location}"

        async def patch(data: bytes) -> int:
            headers = {
                "Content-Range": f"0-{len(data) - 1}",
                "Content-Type": "application/octet-stream",
            }
            async with http.patch(url, data=data, headers=headers) as r:
                return r.status

        statuses = sorted(await asyncio.gather(patch(first), patch(second)))
        assert statuses == [202, 416]
        async with http.get(url) as resp:
            assert resp.headers["Range"] == f"0-{len(first) - 1}"
