"""The S3 calls on one bucket that the driver and its writers share: objects and multipart
uploads by key, with S3's "not found" answers turned into None."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from registry.storage.s3.buffers import Body, Chunks
from registry.storage.s3.errors import is_no_upload, is_not_found
from registry.storage.s3.settings import MAX_COPY_SIZE, MAX_PARTS, MiB
from registry.storage.s3.state import Part, WriterState

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# Large server-side copies go in parts this large, a few at a time.
COPY_PART_SIZE = 512 * MiB
COPY_CONCURRENCY = 4
# Keys per DeleteObjects call (S3 takes at most 1000).
DELETE_BATCH = 1000


class Bucket:
    def __init__(self, client: S3Client, name: str) -> None:
        self.client = client
        self.name = name

    # -- objects -----------------------------------------------------------------------

    async def info(self, key: str) -> tuple[int, float] | None:
        """Size and modification time of the object at ``key``, or None."""
        try:
            head = await self.client.head_object(Bucket=self.name, Key=key)
        except ClientError as error:
            if is_not_found(error):
                return None
            raise
        return head["ContentLength"], head["LastModified"].timestamp()

    async def get(self, key: str) -> tuple[bytes, float] | None:
        """A small object's content and modification time, or None."""
        try:
            response = await self.client.get_object(Bucket=self.name, Key=key)
        except ClientError as error:
            if is_not_found(error):
                return None
            raise
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data, response["LastModified"].timestamp()

    async def put(
        self, key: str, body: bytes | Body, metadata: dict[str, str] | None = None
    ) -> None:
        if metadata is None:
            await self.client.put_object(Bucket=self.name, Key=key, Body=body)
        else:
            await self.client.put_object(Bucket=self.name, Key=key, Body=body, Metadata=metadata)

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.name, Key=key)

    async def delete_many(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            await self.client.delete_objects(
                Bucket=self.name,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )

    async def copy(self, source: str, destination: str, size: int) -> None:
        """A server-side copy; over CopyObject's limit, a multipart upload of copied parts."""
        if size <= MAX_COPY_SIZE:
            await self.client.copy_object(
                Bucket=self.name, Key=destination, CopySource={"Bucket": self.name, "Key": source}
            )
            return
        part_size = max(COPY_PART_SIZE, math.ceil(size / MAX_PARTS))
        upload_id = await self.create_upload(destination)
        limit = asyncio.Semaphore(COPY_CONCURRENCY)

        async def copy_part(number: int, first: int) -> Part:
            async with limit:
                last = min(first + part_size, size) - 1
                return await self.copy_part(destination, upload_id, number, source, first, last)

        try:
            parts = await asyncio.gather(
                *(copy_part(i + 1, first) for i, first in enumerate(range(0, size, part_size)))
            )
            await self.complete(destination, upload_id, parts)
        except BaseException:
            await self.abort(destination, upload_id)
            raise

    # -- multipart uploads -------------------------------------------------------------

    async def create_upload(self, key: str) -> str:
        created = await self.client.create_multipart_upload(Bucket=self.name, Key=key)
        return created["UploadId"]

    async def upload_part(self, key: str, upload_id: str, number: int, body: Chunks) -> Part:
        result = await self.client.upload_part(
            Bucket=self.name,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=Body(*body.pieces),
        )
        return Part(number, result["ETag"], len(body))

    async def copy_part(
        self, key: str, upload_id: str, number: int, source: str, first: int, last: int
    ) -> Part:
        """Bytes ``first`` to ``last`` (inclusive) of ``source`` as part ``number``."""
        result = await self.client.upload_part_copy(
            Bucket=self.name,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": self.name, "Key": source},
            CopySourceRange=f"bytes={first}-{last}",
        )
        return Part(number, result["CopyPartResult"].get("ETag", ""), last - first + 1)

    async def complete(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        await self.client.complete_multipart_upload(
            Bucket=self.name,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
        )

    async def abort(self, key: str, upload_id: str) -> None:
        """Abort an upload; one already completed or aborted is no error."""
        try:
            await self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)
        except ClientError as error:
            if not is_no_upload(error):
                raise

    async def upload_open(self, key: str, upload_id: str) -> bool:
        """Whether the upload is still open (neither completed nor aborted)."""
        try:
            await self.client.list_parts(Bucket=self.name, Key=key, UploadId=upload_id, MaxParts=1)
        except ClientError as error:
            if is_no_upload(error):
                return False
            raise
        return True

    # -- writer states -----------------------------------------------------------------

    async def load_state(self, key: str) -> tuple[WriterState, float] | None:
        """The writer state object at ``key`` and when it was saved, or None."""
        found = await self.get(key)
        if found is None:
            return None
        raw, saved = found
        return WriterState.decode(raw), saved
