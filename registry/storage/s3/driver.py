"""The S3 storage driver: the registry's paths as keys under a prefix in one bucket.

Reads are ranged GETs, ``put_content`` a PUT (atomic), ``move`` a server-side copy then a
delete, ``list`` a paginated ListObjectsV2 with a delimiter; writers are multipart uploads
(`registry.storage.s3.writer`). Readers see a written file only after ``commit`` (S3 cannot read
an unfinished multipart upload); ``stat`` reports its size so far from its writer's state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from nimbus.config import ConfigError
from registry.storage.driver import FileInfo, FileWriter, PathNotFoundError, StorageDriver
from registry.storage.s3.bucket import Bucket
from registry.storage.s3.errors import error_code, is_no_upload, is_not_found
from registry.storage.s3.settings import S3Settings
from registry.storage.s3.state import WRITER_STATE, file_key, is_state_key, state_key
from registry.storage.s3.writer import open_writer

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

READ_CHUNK = 1 << 20


class S3Driver(StorageDriver):
    name = "s3"

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.key_prefix
        self.part_size = settings.multipart_part_size
        # Keys per ListObjectsV2 page (S3 answers at most 1000).
        self.list_page_size = 1000
        self._stack = AsyncExitStack()
        self._objects: Bucket | None = None
        self._lock = asyncio.Lock()

    # -- connection --------------------------------------------------------------------

    async def _bucket(self) -> Bucket:
        objects = self._objects
        if objects is None:
            async with self._lock:
                objects = self._objects
                if objects is None:
                    client: S3Client = await self._stack.enter_async_context(self._client())
                    self._objects = objects = Bucket(client, self.bucket)
        return objects

    async def _s3(self) -> S3Client:
        return (await self._bucket()).client

    def _client(self) -> Any:
        s = self.settings
        aio_config = AioConfig(
            region_name=s.region or None,
            signature_version="s3v4",
            s3={"addressing_style": "path" if s.path_style else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=64,
            connect_timeout=10,
            read_timeout=60,
            # S3-compatible stores differ in the newer checksum headers; send them only when
            # an operation requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        credentials: dict[str, str] = {}
        if s.access_key_id:
            # Explicit keys; otherwise botocore's chain: environment, shared files, roles.
            credentials = {
                "aws_access_key_id": s.access_key_id,
                "aws_secret_access_key": s.secret_access_key,
            }
        return get_session().create_client(
            "s3", endpoint_url=s.endpoint_url or None, config=aio_config, **credentials
        )

    async def open(self) -> None:
        """Check at start that the bucket answers, so a wrong setting fails with its name."""
        s3 = await self._s3()
        where = self.settings.endpoint_url or "AWS S3"
        try:
            await s3.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            code = error_code(error)
            reason = {"404": "does not exist", "403": "refuses these credentials"}.get(code, code)
            problem = f"bucket {self.bucket!r} at {where} {reason or error}"
        except BotoCoreError as error:
            problem = f"cannot reach bucket {self.bucket!r}: {error}"
        await self.close()
        raise ConfigError(f"storage.s3: {problem}")

    async def close(self) -> None:
        await self._stack.aclose()
        self._objects = None

    # -- paths -------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") or p == WRITER_STATE for p in parts):
            raise ValueError(f"invalid storage path {path!r}")
        return self.prefix + "/".join(parts)

    def _dir(self, path: str) -> str:
        """The key prefix of everything under ``path``."""
        key = self._key(path)
        return self.prefix if key == self.prefix else f"{key}/"

    # -- reads -------------------------------------------------------------------------

    async def stat(self, path: str) -> FileInfo | None:
        bucket = await self._bucket()
        key = self._key(path)
        if key != self.prefix:
            found = await bucket.info(key)
            if found is not None:
                return FileInfo(path, found[0], _ns(found[1]), False)
        listed = await bucket.client.list_objects_v2(
            Bucket=self.bucket, Prefix=self._dir(path), MaxKeys=1
        )
        contents = listed.get("Contents", [])
        if not contents:
            return None
        first = contents[0]
        if first.get("Key") == state_key(key):
            # A file being written: its size so far is in the state object's metadata.
            try:
                head = await bucket.client.head_object(Bucket=self.bucket, Key=state_key(key))
            except ClientError as error:
                if is_not_found(error):
                    return None
                raise
            size = int(head.get("Metadata", {}).get("size", "0"))
            return FileInfo(path, size, _ns(head["LastModified"].timestamp()), False)
        modified = first.get("LastModified")
        return FileInfo(path, 0, _ns(modified.timestamp()) if modified else 0, True)

    async def get_content(self, path: str) -> bytes:
        found = await (await self._bucket()).get(self._key(path))
        if found is None:
            raise PathNotFoundError(path)
        return found[0]

    async def put_content(self, path: str, data: bytes, durable: bool = True) -> None:
        # An acknowledged S3 PUT is durable either way.
        await (await self._bucket()).put(self._key(path), data)

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        s3 = await self._s3()
        key = self._key(path)
        if length == 0:
            if await self.stat(path) is None:
                raise PathNotFoundError(path)
            return
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset or length is not None:
            last = "" if length is None else str(offset + length - 1)
            params["Range"] = f"bytes={offset}-{last}"
        try:
            response = await s3.get_object(**params)
        except ClientError as error:
            if is_not_found(error):
                raise PathNotFoundError(path) from None
            if error_code(error) == "InvalidRange":
                return  # offset at the end: nothing left to read
            raise
        async with response["Body"] as body:
            while True:
                chunk: bytes = await body.read(READ_CHUNK)
                if not chunk:
                    break
                yield chunk

    async def url_for(self, path: str, expires: int) -> str | None:
        if not self.settings.redirect:
            return None
        s3 = await self._s3()
        url: str = await s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._key(path)},
            ExpiresIn=expires,
        )
        return url

    async def list(self, path: str) -> list[str]:
        s3 = await self._s3()
        base = self._dir(path)
        names: list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(
            Bucket=self.bucket,
            Prefix=base,
            Delimiter="/",
            PaginationConfig={"PageSize": self.list_page_size},
        ):
            for common in page.get("CommonPrefixes", []):
                names.append(common.get("Prefix", "")[len(base) :].rstrip("/"))
            for obj in page.get("Contents", []):
                names.append(obj.get("Key", "")[len(base) :])
        return [n for n in names if n and n != WRITER_STATE]

    # -- writes ------------------------------------------------------------------------

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        return await open_writer(await self._bucket(), self._key(path), self.part_size, append)

    async def move(self, source: str, destination: str) -> None:
        bucket = await self._bucket()
        src, dst = self._key(source), self._key(destination)
        found = await bucket.info(src)
        if found is None:
            raise PathNotFoundError(source)
        try:
            await bucket.copy(src, dst, found[0])
        except ClientError as error:
            # Deleted (by another replica) between the HEAD and the copy: as if never there.
            if is_no_upload(error):
                raise PathNotFoundError(source) from None
            raise
        await bucket.delete(src)

    async def delete(self, path: str) -> None:
        bucket = await self._bucket()
        key = self._key(path)
        found = False
        if key != self.prefix and await bucket.info(key) is not None:
            await bucket.delete(key)
            found = True
        paginator = bucket.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(
            Bucket=self.bucket,
            Prefix=self._dir(path),
            PaginationConfig={"PageSize": self.list_page_size},
        ):
            keys = [obj.get("Key", "") for obj in page.get("Contents", [])]
            if not keys:
                continue
            found = True
            for state in filter(is_state_key, keys):
                # An unfinished upload holds storage until aborted.
                loaded = await bucket.load_state(state)
                if loaded is not None and loaded[0].upload_id:
                    await bucket.abort(file_key(state), loaded[0].upload_id)
            await bucket.delete_many(keys)
        if not found:
            raise PathNotFoundError(path)


def _ns(timestamp: float) -> int:
    return int(timestamp * 1_000_000_000)
