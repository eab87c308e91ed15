"""One upload session, two registry replicas over one S3 bucket.

A session's requests may reach any worker of any replica. These tests put two replicas'
upload services (each with its own S3 driver and client) on one bucket of the local S3 server
and make the interleavings the chaos soak met deterministic: a step of the other replica runs
exactly before a replica's server-side copy. Completing an upload whose data went away must
answer the spec's error (or succeed when the blob is in fact stored), never fail with the
store's "no such key", and never leave a wrong blob.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from registry.context import RequestContext
from registry.errors import ErrorCode, OCIError
from registry.reference import Digest
from registry.services.blobs import BlobService
from registry.services.uploads import UploadService
from registry.storage.s3 import MIN_PART_SIZE, S3Driver
from registry.storage.s3.bucket import Bucket
from tests.fixtures.s3 import S3Server

Step = Callable[[], Awaitable[object]]


class SteppedBucket(Bucket):
    """The driver's S3 calls, running a queued step of another replica just before the next
    server-side copy: after the move has seen its source, before it copies it."""

    def __init__(self, client: Any, name: str) -> None:
        super().__init__(client, name)
        self.before_copy: Step | None = None
        self.copies = 0

    async def copy(self, source: str, destination: str, size: int) -> None:
        self.copies += 1
        step, self.before_copy = self.before_copy, None
        if step is not None:
            await step()
        await super().copy(source, destination, size)


@dataclass
class Replica:
    driver: S3Driver
    bucket: SteppedBucket
    uploads: UploadService
    blobs: BlobService


@pytest.fixture
async def replicas(s3_server: S3Server, s3_bucket: str) -> AsyncIterator[list[Replica]]:
    settings = s3_server.config(s3_bucket, multipart_part_size=MIN_PART_SIZE)
    made: list[Replica] = []
    for _ in range(2):
        driver = S3Driver(settings)
        await driver.open()
        opened = await driver._bucket()
        driver._objects = bucket = SteppedBucket(opened.client, opened.name)
        blobs = BlobService(driver)
        made.append(Replica(driver, bucket, UploadService(driver, blobs), blobs))
    yield made
    for replica in made:
        await replica.driver.close()


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _read_blob(replica: Replica, digest: Digest) -> bytes:
    return b"".join([chunk async for chunk in replica.blobs.read(digest)])


def _blob_keys(s3: S3Server, bucket: str) -> dict[str, int]:
    return {key: size for key, size in s3.keys(bucket).items() if key.startswith("blobs/")}


CTX = RequestContext(method="PUT")


@pytest.mark.parametrize("size", [40_000, MIN_PART_SIZE + 123_456], ids=["small", "multipart"])
async def test_cancel_on_the_other_replica_amid_completion_is_upload_unknown(
    replicas: list[Replica], s3_server: S3Server, s3_bucket: str, size: int
) -> None:
    """The soak's case: the client gives up on a session (DELETE, served by the other replica)
    while its PUT is still being completed. Before, the completing replica's server-side copy
    found no source (S3 NoSuchKey) and answered 500 with the blob linked but without data."""
    one, two = replicas
    name = "soak/cancelled"
    data = os.urandom(size)
    digest = Digest.of(data)
    status = await one.uploads.start(name)
    await one.uploads.append(name, status.upload_id, _body(data[: size // 2]))
    one.bucket.before_copy = lambda: two.uploads.cancel(name, status.upload_id)

    with pytest.raises(OCIError) as refused:
        await one.uploads.complete(name, status.upload_id, digest, _body(data[size // 2 :]), CTX)

    assert one.bucket.copies == 1, "the completion must have reached its copy"
    assert refused.value.error is ErrorCode.BLOB_UPLOAD_UNKNOWN
    assert refused.value.status == 404
    for replica in replicas:
        assert not await replica.blobs.exists_in(name, digest)
        with pytest.raises(OCIError) as unknown:
            await replica.uploads.status(name, status.upload_id)
        assert unknown.value.error is ErrorCode.BLOB_UPLOAD_UNKNOWN
    # Nothing stored under the digest, and no session or multipart upload left behind.
    assert _blob_keys(s3_server, s3_bucket) == {}
    assert s3_server.multipart_uploads(s3_bucket) == []
    assert not [k for k in s3_server.keys(s3_bucket) if "/_uploads/" in k]

    # The client starts again, on either replica, and the blob is stored whole.
    again = await two.uploads.start(name)
    await two.uploads.complete(name, again.upload_id, digest, _body(data), CTX)
    for replica in replicas:
        assert await _read_blob(replica, digest) == data
        assert (await replica.blobs.stat(name, digest)).size == size


async def test_second_completion_of_one_session_on_the_other_replica_both_succeed(
    replicas: list[Replica], s3_server: S3Server, s3_bucket: str
) -> None:
    """A client retrying a completion whose answer it never got: the retry, served by the other
    replica, stores the blob while the first is about to move it. Both answer 201."""
    one, two = replicas
    name = "soak/twice"
    data = os.urandom(70_000)
    digest = Digest.of(data)
    status = await one.uploads.start(name)
    await two.uploads.append(name, status.upload_id, _body(data))
    results: list[int] = []

    async def other_completes() -> None:
        info = await two.uploads.complete(name, status.upload_id, digest, None, CTX)
        results.append(info.size)

    one.bucket.before_copy = other_completes
    info = await one.uploads.complete(name, status.upload_id, digest, None, CTX)

    assert results == [len(data)]
    assert (info.digest, info.size) == (digest, len(data))
    for replica in replicas:
        assert await _read_blob(replica, digest) == data
    assert list(_blob_keys(s3_server, s3_bucket).values()) == [len(data)]
    assert not [k for k in s3_server.keys(s3_bucket) if "/_uploads/" in k]


async def test_chunks_on_one_replica_completion_on_the_other(
    replicas: list[Replica], s3_server: S3Server, s3_bucket: str
) -> None:
    """A session split across replicas (one multipart upload continued by both) completes."""
    one, two = replicas
    name = "soak/split"
    data = os.urandom(2 * MIN_PART_SIZE + 4321)
    digest = Digest.of(data)
    status = await one.uploads.start(name)
    third = len(data) // 3
    await one.uploads.append(name, status.upload_id, _body(data[:third]))
    await two.uploads.append(name, status.upload_id, _body(data[third : 2 * third]))
    await one.uploads.append(name, status.upload_id, _body(data[2 * third :]))
    info = await two.uploads.complete(name, status.upload_id, digest, None, CTX)
    assert info.size == len(data)
    assert await _read_blob(one, digest) == data
    assert s3_server.multipart_uploads(s3_bucket) == []
