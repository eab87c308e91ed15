"""Writing a file as an S3 multipart upload that any writer, in any replica, can continue.

Every part but the last must hold at least 5 MiB, so a writer uploads full parts as they fill
and keeps the remainder in the state object beside the file (`registry.storage.s3.state`);
``close`` saves that state, ``commit`` uploads the remainder as the last part and completes the
upload. A writer holds at most one part in memory, and sends it while the next one fills.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

from botocore.exceptions import ClientError

from registry.storage.driver import FileWriter, PathNotFoundError
from registry.storage.s3.bucket import Bucket
from registry.storage.s3.buffers import Body, Chunks
from registry.storage.s3.errors import is_no_upload
from registry.storage.s3.settings import MAX_COPY_SIZE, MAX_PARTS, MIN_PART_SIZE
from registry.storage.s3.state import Part, WriterState, state_key


async def open_writer(bucket: Bucket, key: str, part_size: int, append: bool) -> S3Writer:
    """A writer of ``key``: a new file, or (``append``) continuing what is there."""
    loaded, committed = await asyncio.gather(bucket.load_state(state_key(key)), bucket.info(key))
    state, state_time = loaded or (None, 0.0)
    committed_size, committed_time = committed or (None, 0.0)

    if not append:
        if state is not None and state.upload_id:
            await bucket.abort(key, state.upload_id)
        return S3Writer(
            bucket, key, part_size, WriterState(), replaces_object=committed_size is not None
        )
    if state is not None and committed_size is not None:
        # A crash between two steps left both; the newer one is the file.
        if await _state_is_newer(bucket, key, state, state_time, committed_time):
            return S3Writer(bucket, key, part_size, state, new=False, replaces_object=True)
        return S3Writer(
            bucket, key, part_size, WriterState(), base_size=committed_size, stale_state=True
        )
    if committed_size is not None:
        # A committed file continues as a new multipart upload that starts with it.
        return S3Writer(bucket, key, part_size, WriterState(), base_size=committed_size)
    return S3Writer(bucket, key, part_size, state or WriterState(), new=state is None)


async def _state_is_newer(
    bucket: Bucket, key: str, state: WriterState, state_time: float, committed_time: float
) -> bool:
    if state.upload_id is None:
        return state_time > committed_time
    # A completed upload is gone; one still open holds the newer content.
    return await bucket.upload_open(key, state.upload_id)


class S3Writer(FileWriter):
    """Appends to a multipart upload; ``close`` saves the state, ``commit`` completes it."""

    def __init__(
        self,
        bucket: Bucket,
        key: str,
        part_size: int,
        state: WriterState,
        *,
        base_size: int | None = None,
        stale_state: bool = False,
        replaces_object: bool = False,
        new: bool = True,
    ) -> None:
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._state_key = state_key(key)
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
        self._sending: asyncio.Task[Part] | None = None
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
        while len(self._state.tail) >= self._part_size:
            await self._upload_tail_as_part()

    async def _ensure_upload(self) -> str:
        if self._state.upload_id is None:
            self._state.upload_id = await self._bucket.create_upload(self._key)
            self._created_upload = True
        return self._state.upload_id

    async def _upload_tail_as_part(self) -> None:
        """Send the tail as the next part, in the background; the previous one first ends."""
        upload_id = await self._ensure_upload()
        await self._settle()
        number = len(self._state.parts) + 1
        if number > MAX_PARTS:
            raise OSError(f"file exceeds {MAX_PARTS} parts of {self._part_size} bytes")
        # One part in flight, one filling.
        body, self._state.tail = self._state.tail.split(self._part_size)
        self._sending_size = len(body)
        self._sending = asyncio.create_task(
            self._bucket.upload_part(self._key, upload_id, number, body)
        )

    async def _settle(self) -> None:
        """Wait for the part in flight and record it (or raise its failure)."""
        task, self._sending = self._sending, None
        if task is None:
            return
        try:
            self._state.parts.append(await task)
        except ClientError as error:
            # Another replica completed or aborted the upload this writer continues.
            if is_no_upload(error):
                raise PathNotFoundError(self._key) from None
            raise
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
                found = await self._bucket.get(self._key)
                if found is None:
                    raise OSError(f"{self._key} vanished while being continued")
                self._state.tail = Chunks([found[0]])
        else:
            upload_id = await self._ensure_upload()
            count = math.ceil(size / MAX_COPY_SIZE)
            step = math.ceil(size / count)
            for number, first in enumerate(range(0, size, step), start=1):
                last = min(first + step, size) - 1
                part = await self._bucket.copy_part(
                    self._key, upload_id, number, self._key, first, last
                )
                self._state.parts.append(part)
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
            await self._bucket.abort(self._key, self._state.upload_id)
        reopened = await open_writer(self._bucket, self._key, self._part_size, append=True)
        self._state = reopened._state
        self._base_size = reopened._base_size
        self._stale_state = reopened._stale_state
        self._replaces_object = reopened._replaces_object
        self._created_upload = False
        self._dirty = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._dirty:
            await self._drop_sending()
            return
        await self._settle()
        await self._bucket.put(
            self._state_key, self._state.encode(), metadata={"size": str(self.size)}
        )
        if self._replaces_object:
            await self._bucket.delete(self._key)

    async def commit(self) -> None:
        if self._closed:
            raise ValueError("writer already closed")
        self._closed = True
        try:
            await self._commit()
        except ClientError as error:
            # Another replica completed or aborted the upload since this writer opened it.
            if is_no_upload(error):
                raise PathNotFoundError(self._key) from None
            raise

    async def _commit(self) -> None:
        if self._base_size is not None:
            # Nothing appended to a committed file: it stays as it is.
            if self._stale_state:
                await self._bucket.delete(self._state_key)
            return
        state = self._state
        if state.upload_id is None:
            await self._bucket.put(self._key, Body(*state.tail.pieces))
        else:
            if state.tail or not (state.parts or self._sending):
                await self._upload_tail_as_part()
            await self._settle()
            await self._bucket.complete(self._key, state.upload_id, state.parts)
        await self._bucket.delete(self._state_key)
