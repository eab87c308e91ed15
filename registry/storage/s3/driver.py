"""S3 storage driver: objects under a key prefix in one bucket, written as multipart uploads.

A file being written is an S3 multipart upload. Every part but the last must hold at least
5 MiB, so a writer uploads full parts as they fill and keeps the remainder (less than one part)
in a small state object under the path, ``<path>/.nimbus-writer``, beside the upload id and the
parts list. The next writer, in this process or another replica, starts from that state, and
``commit`` uploads the remainder as the last part and completes the upload. A writer holds at
most one part in memory.

Readers see a written file only after ``commit`` (S3 cannot read an unfinished multipart
upload); ``stat`` reports its size so far from the state object. Everything else maps onto
single S3 calls: reads are ranged GETs, ``put_content`` a PUT (atomic), ``move`` a server-side
copy then a delete, ``list`` a paginated ListObjectsV2 with a delimiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from nimbus.config import ConfigError
from registry.config import S3Config
from registry.storage.driver import FileInfo, FileWriter, PathNotFoundError, StorageDriver

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger("nimbus.storage.s3")

MiB = 1 << 20
GiB = 1 << 30
# S3's limits: parts of a multipart upload but the last, a single CopyObject, a part count.
MIN_PART_SIZE = 5 * MiB
MAX_COPY_SIZE = 5 * GiB
MAX_PARTS = 10_000
# Large server-side copies go in parts this large, a few at a time.
COPY_PART_SIZE = 512 * MiB
COPY_CONCURRENCY = 4
READ_CHUNK = 1 << 20
DELETE_BATCH = 1000
# The writer state of a path lives under it; no name of the registry's layout starts with '.'.
WRITER_STATE = ".nimbus-writer"
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


class _Chunks:
    """Bytes appended piece by piece and kept as they came: a part is never copied whole."""

    def __init__(self, pieces: Sequence[bytes | memoryview] = ()) -> None:
        self.pieces: list[bytes | memoryview] = [p for p in pieces if len(p)]
        self.size = sum(len(p) for p in self.pieces)

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes | memoryview) -> None:
        if len(data):
            self.pieces.append(data)
            self.size += len(data)

    def split(self, size: int) -> tuple[_Chunks, _Chunks]:
        """The first ``size`` bytes and the rest (views share the pieces' memory)."""
        head, rest, taken = _Chunks(), _Chunks(), 0
        for piece in self.pieces:
            if taken >= size:
                rest.append(piece)
            elif taken + len(piece) <= size:
                head.append(piece)
            else:
                view = memoryview(piece)
                head.append(view[: size - taken])
                rest.append(view[size - taken :])
            taken += len(piece)
        return head, rest


class _Body(io.RawIOBase):
    """Buffers read as one seekable stream, so the HTTP client sends them in chunks.

    Given one bytes object, the client would join it with the request head and queue the rest
    in its transport: two more copies of a whole part. Read in chunks, a part is held once.
    """

    def __init__(self, *pieces: bytes | memoryview) -> None:
        super().__init__()
        self._pieces = [memoryview(p).cast("B") for p in pieces if len(p)]
        self._size = sum(len(p) for p in self._pieces)
        self._position = 0
        # Where the position falls: a piece, and an offset in it.
        self._index = 0
        self._offset = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}
        self._position = min(max(0, base[whence] + offset), self._size)
        self._index, self._offset = 0, self._position
        while self._index < len(self._pieces) and self._offset >= len(self._pieces[self._index]):
            self._offset -= len(self._pieces[self._index])
            self._index += 1
        return self._position

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        written = 0
        while written < len(out) and self._index < len(self._pieces):
            piece = self._pieces[self._index]
            n = min(len(piece) - self._offset, len(out) - written)
            out[written : written + n] = piece[self._offset : self._offset + n]
            written += n
            self._offset += n
            if self._offset == len(piece):
                self._index, self._offset = self._index + 1, 0
        self._position += written
        return written


def _not_found(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _NOT_FOUND


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@dataclass(slots=True)
class _Part:
    number: int
    etag: str
    size: int


@dataclass(slots=True)
class _State:
    """What a writer continues from: a multipart upload's parts and the tail not yet a part."""

    upload_id: str | None = None
    parts: list[_Part] = field(default_factory=list)
    tail: _Chunks = field(default_factory=_Chunks)

    @property
    def uploaded(self) -> int:
        return sum(p.size for p in self.parts)

    def encode(self) -> _Body:
        header = {
            "upload_id": self.upload_id,
            "parts": [[p.number, p.etag, p.size] for p in self.parts],
        }
        line = json.dumps(header, separators=(",", ":")).encode() + b"\n"
        return _Body(line, *self.tail.pieces)

    @classmethod
    def decode(cls, raw: bytes) -> _State:
        end = raw.index(b"\n")
        header = json.loads(raw[:end])
        parts = [_Part(int(n), str(etag), int(size)) for n, etag, size in header["parts"]]
        return cls(header["upload_id"], parts, _Chunks([memoryview(raw)[end + 1 :]]))


class S3Driver(StorageDriver):
    name = "s3"

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.bucket = config.bucket
        prefix = config.prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.part_size = config.multipart_part_size
        # Keys per ListObjectsV2 page (S3 answers at most 1000).
        self.list_page_size = 1000
        self._stack = AsyncExitStack()
        self._client: S3Client | None = None
        self._lock = asyncio.Lock()

    # -- connection --------------------------------------------------------------------

    async def _s3(self) -> S3Client:
        client = self._client
        if client is None:
            async with self._lock:
                client = self._client
                if client is None:
                    created: S3Client = await self._stack.enter_async_context(self._create_client())
                    self._client = client = created
        return client

    def _create_client(self) -> Any:
        c = self.config
        aio_config = AioConfig(
            region_name=c.region or None,
            signature_version="s3v4",
            s3={"addressing_style": "path" if c.path_style else "auto"},
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
        if c.access_key_id:
            # Explicit keys; otherwise botocore's chain: environment, shared files, roles.
            credentials = {
                "aws_access_key_id": c.access_key_id,
                "aws_secret_access_key": c.secret_access_key,
            }
        return get_session().create_client(
            "s3", endpoint_url=c.endpoint_url or None, config=aio_config, **credentials
        )

    async def open(self) -> None:
        """Check at start that the bucket answers, so a wrong setting fails with its name."""
        s3 = await self._s3()
        where = self.config.endpoint_url or "AWS S3"
        try:
            await s3.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            code = _error_code(error)
            reason = {"404": "does not exist", "403": "refuses these credentials"}.get(code, code)
            problem = f"bucket {self.bucket!r} at {where} {reason or error}"
        except BotoCoreError as error:
            problem = f"cannot reach bucket {self.bucket!r}: {error}"
        await self.close()
        raise ConfigError(f"storage.s3: {problem}")

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

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
        s3 = await self._s3()
        key = self._key(path)
        if key != self.prefix:
            try:
                head = await s3.head_object(Bucket=self.bucket, Key=key)
                return FileInfo(
                    path, head["ContentLength"], _ns(head["LastModified"].timestamp()), False
                )
            except ClientError as error:
                if not _not_found(error):
                    raise
        listed = await s3.list_objects_v2(Bucket=self.bucket, Prefix=self._dir(path), MaxKeys=1)
        contents = listed.get("Contents", [])
        if not contents:
            return None
        first = contents[0]
        if first.get("Key") == f"{key}/{WRITER_STATE}":
            # A file being written: its size so far is in the state object's metadata.
            try:
                head = await s3.head_object(Bucket=self.bucket, Key=f"{key}/{WRITER_STATE}")
            except ClientError as error:
                if _not_found(error):
                    return None
                raise
            size = int(head.get("Metadata", {}).get("size", "0"))
            return FileInfo(path, size, _ns(head["LastModified"].timestamp()), False)
        modified = first.get("LastModified")
        return FileInfo(path, 0, _ns(modified.timestamp()) if modified else 0, True)

    async def get_content(self, path: str) -> bytes:
        s3 = await self._s3()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=self._key(path))
        except ClientError as error:
            if _not_found(error):
                raise PathNotFoundError(path) from None
            raise
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def put_content(self, path: str, data: bytes) -> None:
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=self._key(path), Body=data)

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
            if _not_found(error):
                raise PathNotFoundError(path) from None
            if _error_code(error) == "InvalidRange":
                return  # offset at the end: nothing left to read
            raise
        async with response["Body"] as body:
            while True:
                chunk: bytes = await body.read(READ_CHUNK)
                if not chunk:
                    break
                yield chunk

    async def url_for(self, path: str, expires: int) -> str | None:
        if not self.config.redirect:
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
        s3 = await self._s3()
        key = self._key(path)
        state_key = f"{key}/{WRITER_STATE}"
        (state, state_time), (committed, committed_time) = await asyncio.gather(
            self._load_state(s3, state_key), self._object_info(s3, key)
        )
        if not append:
            if state is not None and state.upload_id:
                await self._abort(s3, key, state.upload_id)
            return _S3Writer(self, s3, key, _State(), replaces_object=committed is not None)
        if state is not None and committed is not None:
            # A crash between two steps left both; the newer one is the file.
            if await self._state_is_newer(s3, key, state, state_time, committed_time):
                return _S3Writer(self, s3, key, state, new=False, replaces_object=True)
            return _S3Writer(self, s3, key, _State(), base_size=committed, stale_state=True)
        if committed is not None:
            # A committed file continues as a new multipart upload that starts with it.
            return _S3Writer(self, s3, key, _State(), base_size=committed)
        return _S3Writer(self, s3, key, state or _State(), new=state is None)

    async def _state_is_newer(
        self, s3: S3Client, key: str, state: _State, state_time: float, committed_time: float
    ) -> bool:
        if state.upload_id is None:
            return state_time > committed_time
        # A completed upload is gone; one still open holds the newer content.
        try:
            await s3.list_parts(Bucket=self.bucket, Key=key, UploadId=state.upload_id, MaxParts=1)
        except ClientError as error:
            if _error_code(error) in ("NoSuchUpload", *_NOT_FOUND):
                return False
            raise
        return True

    async def _load_state(self, s3: S3Client, state_key: str) -> tuple[_State | None, float]:
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=state_key)
        except ClientError as error:
            if _not_found(error):
                return None, 0.0
            raise
        async with response["Body"] as body:
            raw: bytes = await body.read()
        return _State.decode(raw), response["LastModified"].timestamp()

    async def _object_info(self, s3: S3Client, key: str) -> tuple[int | None, float]:
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _not_found(error):
                return None, 0.0
            raise
        return head["ContentLength"], head["LastModified"].timestamp()

    async def _object_size(self, s3: S3Client, key: str) -> int | None:
        return (await self._object_info(s3, key))[0]

    async def _abort(self, s3: S3Client, key: str, upload_id: str) -> None:
        try:
            await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            if _error_code(error) not in ("NoSuchUpload", *_NOT_FOUND):
                raise

    async def move(self, source: str, destination: str) -> None:
        s3 = await self._s3()
        src, dst = self._key(source), self._key(destination)
        size = await self._object_size(s3, src)
        if size is None:
            raise PathNotFoundError(source)
        if size <= MAX_COPY_SIZE:
            await s3.copy_object(
                Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src}
            )
        else:
            await self._copy_multipart(s3, src, dst, size)
        await s3.delete_object(Bucket=self.bucket, Key=src)

    async def _copy_multipart(self, s3: S3Client, src: str, dst: str, size: int) -> None:
        """A server-side copy of an object over CopyObject's 5 GiB limit, in parts."""
        part_size = max(COPY_PART_SIZE, math.ceil(size / MAX_PARTS))
        created = await s3.create_multipart_upload(Bucket=self.bucket, Key=dst)
        upload_id = created["UploadId"]
        limit = asyncio.Semaphore(COPY_CONCURRENCY)

        async def copy_part(number: int, first: int) -> _Part:
            last = min(first + part_size, size) - 1
            async with limit:
                result = await s3.upload_part_copy(
                    Bucket=self.bucket,
                    Key=dst,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": src},
                    CopySourceRange=f"bytes={first}-{last}",
                )
            return _Part(number, result["CopyPartResult"].get("ETag", ""), last - first + 1)

        try:
            parts = await asyncio.gather(
                *(copy_part(i + 1, first) for i, first in enumerate(range(0, size, part_size)))
            )
            await self._complete(s3, dst, upload_id, parts)
        except BaseException:
            await self._abort(s3, dst, upload_id)
            raise

    async def _complete(
        self, s3: S3Client, key: str, upload_id: str, parts: Sequence[_Part]
    ) -> None:
        await s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
        )

    async def delete(self, path: str) -> None:
        s3 = await self._s3()
        key = self._key(path)
        found = False
        if key != self.prefix and await self._object_size(s3, key) is not None:
            await s3.delete_object(Bucket=self.bucket, Key=key)
            found = True
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(
            Bucket=self.bucket,
            Prefix=self._dir(path),
            PaginationConfig={"PageSize": self.list_page_size},
        ):
            keys = [obj.get("Key", "") for obj in page.get("Contents", [])]
            if not keys:
                continue
            found = True
            for state_key in (k for k in keys if k.endswith(f"/{WRITER_STATE}")):
                # An unfinished upload holds storage until aborted.
                state, _ = await self._load_state(s3, state_key)
                if state is not None and state.upload_id:
                    await self._abort(s3, state_key.rsplit("/", 1)[0], state.upload_id)
            for start in range(0, len(keys), DELETE_BATCH):
                batch = keys[start : start + DELETE_BATCH]
                await s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
        if not found:
            raise PathNotFoundError(path)


def _ns(timestamp: float) -> int:
    return int(timestamp * 1_000_000_000)


class _S3Writer(FileWriter):
    """Appends to a multipart upload; ``close`` saves the state, ``commit`` completes it."""

    def __init__(
        self,
        driver: S3Driver,
        s3: S3Client,
        key: str,
        state: _State,
        *,
        base_size: int | None = None,
        stale_state: bool = False,
        replaces_object: bool = False,
        new: bool = True,
    ) -> None:
        self._driver = driver
        self._s3 = s3
        self._bucket = driver.bucket
        self._key = key
        self._state_key = f"{key}/{WRITER_STATE}"
        self._state = state
        # A committed object this writer continues; folded into the upload on the first write.
        self._base_size = base_size
        self._stale_state = stale_state
        # The committed object at the key is older than what this writer holds: once the
        # state is saved it goes, so that readers and the next writer see the state.
        self._replaces_object = replaces_object
        # A new file exists once its writer closes, like an opened file on a disk.
        self._dirty = new and base_size is None
        self._created_upload = False
        # One part goes out while the next fills: the client's stream need not wait on S3.
        self._sending: asyncio.Task[_Part] | None = None
        self._sending_size = 0
        self._opened_size = self.size
        self._closed = False

    @property
    def size(self) -> int:
        if self._base_size is not None:
            return self._base_size
        return self._state.uploaded + self._sending_size + len(self._state.tail)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        await self._absorb_base()
        self._dirty = True
        # Kept by reference until sent: it must not change under us.
        self._state.tail.append(data if isinstance(data, bytes) else bytes(data))
        while len(self._state.tail) >= self._driver.part_size:
            await self._upload_tail_as_part()

    async def _ensure_upload(self) -> str:
        if self._state.upload_id is None:
            created = await self._s3.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._state.upload_id = created["UploadId"]
            self._created_upload = True
        return self._state.upload_id

    async def _upload_tail_as_part(self) -> None:
        """Send the tail as the next part, in the background; the previous one first ends."""
        upload_id = await self._ensure_upload()
        await self._settle()
        number = len(self._state.parts) + 1
        if number > MAX_PARTS:
            raise OSError(f"file exceeds {MAX_PARTS} parts of {self._driver.part_size} bytes")
        # One part in flight, one filling.
        body, self._state.tail = self._state.tail.split(self._driver.part_size)
        self._sending_size = len(body)
        self._sending = asyncio.create_task(self._send_part(upload_id, number, body))

    async def _send_part(self, upload_id: str, number: int, body: _Chunks) -> _Part:
        result = await self._s3.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=upload_id,
            PartNumber=number,
            Body=_Body(*body.pieces),
        )
        return _Part(number, result["ETag"], len(body))

    async def _settle(self) -> None:
        """Wait for the part in flight and record it (or raise its failure)."""
        task, self._sending = self._sending, None
        if task is None:
            return
        try:
            self._state.parts.append(await task)
        finally:
            self._sending_size = 0

    async def _drop_sending(self) -> None:
        task, self._sending = self._sending, None
        self._sending_size = 0
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _absorb_base(self) -> None:
        """Turn the committed object this writer continues into the upload's first part(s)."""
        size = self._base_size
        if size is None:
            return
        if size < MIN_PART_SIZE:
            if size:
                response = await self._s3.get_object(Bucket=self._bucket, Key=self._key)
                async with response["Body"] as body:
                    self._state.tail = _Chunks([await body.read()])
        else:
            upload_id = await self._ensure_upload()
            count = math.ceil(size / MAX_COPY_SIZE)
            step = math.ceil(size / count)
            for number, first in enumerate(range(0, size, step), start=1):
                last = min(first + step, size) - 1
                result = await self._s3.upload_part_copy(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self._bucket, "Key": self._key},
                    CopySourceRange=f"bytes={first}-{last}",
                )
                etag = result["CopyPartResult"].get("ETag", "")
                self._state.parts.append(_Part(number, etag, last - first + 1))
        self._base_size = None
        self._replaces_object = True

    async def truncate(self, size: int) -> None:
        if size > self.size:
            raise ValueError(f"cannot truncate a {self.size}-byte file to {size} bytes")
        if size == self.size:
            return
        try:
            await self._settle()
        except Exception:
            # The part in flight failed: only going back to the start is left.
            await self._drop_sending()
            if size != self._opened_size:
                raise
        uploaded = self._state.uploaded
        if self._base_size is None and size >= uploaded:
            self._state.tail = self._state.tail.split(size - uploaded)[0]
            self._dirty = True
            return
        if size != self._opened_size:
            raise ValueError("a writer truncates within its last part or back to where it began")
        await self._rollback()

    async def _rollback(self) -> None:
        """Back to what this writer opened (parts uploaded since stay unused, then replaced)."""
        await self._drop_sending()
        if self._created_upload and self._state.upload_id:
            await self._driver._abort(self._s3, self._key, self._state.upload_id)
        reopened = await self._driver.writer(self._key_path(), append=True)
        assert isinstance(reopened, _S3Writer)
        self._state = reopened._state
        self._base_size = reopened._base_size
        self._stale_state = reopened._stale_state
        self._replaces_object = reopened._replaces_object
        self._created_upload = False
        self._dirty = False

    def _key_path(self) -> str:
        return self._key[len(self._driver.prefix) :]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._dirty:
            await self._drop_sending()
            return
        await self._settle()
        await self._s3.put_object(
            Bucket=self._bucket,
            Key=self._state_key,
            Body=self._state.encode(),
            Metadata={"size": str(self.size)},
        )
        if self._replaces_object:
            await self._s3.delete_object(Bucket=self._bucket, Key=self._key)

    async def commit(self) -> None:
        if self._closed:
            raise ValueError("writer already closed")
        self._closed = True
        if self._base_size is not None:
            # Nothing appended to a committed file: it stays as it is.
            if self._stale_state:
                await self._s3.delete_object(Bucket=self._bucket, Key=self._state_key)
            return
        state = self._state
        if state.upload_id is None:
            await self._s3.put_object(
                Bucket=self._bucket, Key=self._key, Body=_Body(*state.tail.pieces)
            )
        else:
            if state.tail or not (state.parts or self._sending):
                await self._upload_tail_as_part()
            await self._settle()
            await self._driver._complete(self._s3, self._key, state.upload_id, state.parts)
        await self._s3.delete_object(Bucket=self._bucket, Key=self._state_key)
