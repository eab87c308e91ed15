"""Upload sessions: chunked, resumable across restarts, verified against their digest."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from nimbus.oci.mediatypes import OCTET_STREAM
from registry.context import RequestContext
from registry.errors import ErrorCode, OCIError
from registry.events.sink import Action, EventSink, NullSink, RegistryEvent
from registry.lifecycle.hooks import NO_HOOKS, LifecycleHooks
from registry.reference import Digest
from registry.services.blobs import BlobInfo, BlobService
from registry.storage import paths
from registry.storage.driver import FileWriter, PathNotFoundError, StorageDriver

# Writes and hashing go to threads in batches this large: few hops, bounded memory.
WRITE_BATCH = 1 << 20
INLINE_HASH_BYTES = 64 << 10
MAX_CACHED_HASHERS = 1024
UUID_HEX_LENGTH = 32


@dataclass(frozen=True, slots=True)
class UploadStatus:
    name: str
    upload_id: str
    size: int


@dataclass(slots=True)
class _HashState:
    algorithm: str
    hasher: Any
    offset: int


class UploadService:
    def __init__(
        self,
        driver: StorageDriver,
        blobs: BlobService,
        events: EventSink | None = None,
        emit_blob_events: bool = True,
    ) -> None:
        self.driver = driver
        self.blobs = blobs
        self.events: EventSink = events or NullSink()
        self.emit_blob_events = emit_blob_events
        # Running sha256 of each session's data, so completion need not re-read it. Another
        # process (or a restart) loses it, and completion then hashes the file from disk.
        self._hashes: OrderedDict[str, _HashState] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.on_complete: Callable[[float], None] | None = None
        # Quotas (registry.lifecycle): an upload that cannot fit is refused, and removed.
        self.hooks: LifecycleHooks = NO_HOOKS

    @staticmethod
    def _check_id(upload_id: str) -> None:
        if len(upload_id) != UUID_HEX_LENGTH or not all(c in "0123456789abcdef" for c in upload_id):
            raise OCIError(ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={"uuid": upload_id})

    async def start(self, name: str) -> UploadStatus:
        upload_id = uuid.uuid4().hex
        # Not forced to disk: a session a crash loses answers BLOB_UPLOAD_UNKNOWN and the
        # client starts again; nothing acknowledged as stored depends on it.
        await self.driver.put_content(
            paths.upload_started(name, upload_id), f"{time.time():.6f}".encode(), durable=False
        )
        self._remember(upload_id, _HashState("sha256", hashlib.sha256(), 0))
        return UploadStatus(name, upload_id, 0)

    async def status(self, name: str, upload_id: str) -> UploadStatus:
        self._check_id(upload_id)
        started, data = await asyncio.gather(
            self.driver.stat(paths.upload_started(name, upload_id)),
            self.driver.stat(paths.upload_data(name, upload_id)),
        )
        if started is None:
            raise OCIError(ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={"uuid": upload_id})
        return UploadStatus(name, upload_id, data.size if data else 0)

    async def started_at(self, name: str, upload_id: str) -> float:
        raw = await self.driver.get_content(paths.upload_started(name, upload_id))
        return float(raw.decode())

    def _lock(self, upload_id: str) -> asyncio.Lock:
        """One request at a time per session in this process, so two chunks never interleave."""
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = self._locks[upload_id] = asyncio.Lock()
        return lock

    async def append(
        self,
        name: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        content_range: tuple[int, int] | None = None,
        content_length: int | None = None,
    ) -> UploadStatus:
        """Append one chunk. A chunk that fails half-way is cut off again: all or nothing."""
        async with self._lock(upload_id):
            try:
                return await self._append(name, upload_id, body, content_range, content_length)
            except OCIError as error:
                await self._forget_refused(name, upload_id, error)
                raise
            except PathNotFoundError:
                # Cancelled or completed by another request (another worker or replica).
                raise _gone(upload_id) from None

    async def _forget_refused(self, name: str, upload_id: str, error: OCIError) -> None:
        """A push refused by a quota keeps nothing it stored."""
        if error.error is ErrorCode.DENIED:
            await self._forget(name, upload_id)

    async def _append(
        self,
        name: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        content_range: tuple[int, int] | None,
        content_length: int | None,
        commit: bool = False,
        digest: Digest | None = None,
    ) -> UploadStatus:
        """``commit``: the last chunk, committed by the writer that wrote it."""
        await self.status(name, upload_id)
        writer = await self.driver.writer(paths.upload_data(name, upload_id), append=True)
        committed = False
        try:
            start = writer.size
            if content_range is not None:
                first, last = content_range
                if first != start or last < first:
                    raise OCIError(
                        ErrorCode.RANGE_INVALID,
                        f"chunk starts at {first}, upload is at {start}",
                        detail={"offset": start},
                    )
                if content_length is not None and last - first + 1 != content_length:
                    raise OCIError(
                        ErrorCode.SIZE_INVALID, "Content-Range and Content-Length disagree"
                    )
                # A streamed chunk (no Content-Length) must still be exactly its range.
                content_length = last - first + 1
            if content_length is not None:
                await self.hooks.admitting(name, start + content_length, digest)
            await self._write(upload_id, writer, body, start, content_length)
            size = writer.size
            if content_length is None:
                await self.hooks.admitting(name, size)
            if commit:
                await writer.commit()
                committed = True
        finally:
            if not committed:
                await writer.close()
        return UploadStatus(name, upload_id, size)

    async def _write(
        self,
        upload_id: str,
        writer: FileWriter,
        body: AsyncIterator[bytes],
        start: int,
        content_length: int | None,
    ) -> None:
        state = self._hashes.get(upload_id)
        if state is not None and state.offset != start:
            self._hashes.pop(upload_id, None)
            state = None
        try:
            async for batch in _batches(body, WRITE_BATCH):
                if state is not None and len(batch) <= INLINE_HASH_BYTES:
                    # Hashing this little costs less than a thread hop (about 10 us).
                    state.hasher.update(batch)
                    state.offset += len(batch)
                    await writer.write(batch)
                elif state is not None:
                    # Hash and write in two threads at once: both release the GIL.
                    await asyncio.gather(
                        asyncio.to_thread(state.hasher.update, batch), writer.write(batch)
                    )
                    state.offset += len(batch)
                else:
                    await writer.write(batch)
            written = writer.size - start
            if content_length is not None and written != content_length:
                raise OCIError(
                    ErrorCode.SIZE_INVALID,
                    f"received {written} bytes, Content-Length said {content_length}",
                )
        except BaseException:
            await writer.truncate(start)
            self._hashes.pop(upload_id, None)
            raise

    async def complete(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes] | None,
        ctx: RequestContext,
        content_length: int | None = None,
        content_range: tuple[int, int] | None = None,
        quiet: bool = False,
    ) -> BlobInfo:
        """Finish an upload, with its last chunk if a body comes. A last chunk that does not
        follow on is refused like a PATCH of it (416), and the session stays open.

        ``quiet``: no push event and no upload timing (a cache fill from an upstream)."""
        async with self._lock(upload_id):
            try:
                return await self._complete(
                    name, upload_id, digest, body, ctx, content_length, content_range, quiet
                )
            except OCIError as error:
                await self._forget_refused(name, upload_id, error)
                raise

    async def _complete(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes] | None,
        ctx: RequestContext,
        content_length: int | None,
        content_range: tuple[int, int] | None,
        quiet: bool = False,
    ) -> BlobInfo:
        started = time.monotonic()
        try:
            status = await self._commit_and_store(
                name, upload_id, digest, body, content_length, content_range
            )
        except PathNotFoundError:
            return await self._ended_elsewhere(name, upload_id, digest)
        await self._forget(name, upload_id)
        if self.on_complete is not None and not quiet:
            self.on_complete(time.monotonic() - started)
        # Linked, and its data is in place with the size just hashed: no need to look again.
        blob_path = paths.blob_data(digest)
        info = BlobInfo(digest, status.size, self.driver.local_path(blob_path))
        if self.emit_blob_events and not quiet:
            await self.events.emit(
                RegistryEvent(
                    Action.PUSH,
                    name,
                    str(digest),
                    OCTET_STREAM,
                    info.size,
                    is_blob=True,
                    context=ctx,
                )
            )
        return info

    async def _commit_and_store(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes] | None,
        content_length: int | None,
        content_range: tuple[int, int] | None,
    ) -> UploadStatus:
        """Commit the session's data, check its digest and move it into place as the blob.

        Raises PathNotFoundError when the data goes away meanwhile."""
        data_path = paths.upload_data(name, upload_id)
        # Commit before hashing: an object store reads a file's bytes only once committed (and
        # committing a file no chunk reached makes it, empty).
        if body is not None:
            status = await self._append(
                name, upload_id, body, content_range, content_length, commit=True, digest=digest
            )
        else:
            status = await self.status(name, upload_id)
            writer = await self.driver.writer(data_path, append=True)
            await writer.commit()
        actual = await self._digest_of(name, upload_id, digest.algorithm, status.size)
        if actual != digest.hex:
            await self._forget(name, upload_id)
            raise OCIError(
                ErrorCode.DIGEST_INVALID,
                "provided digest did not match uploaded content",
                detail={"digest": str(digest), "actual": f"{digest.algorithm}:{actual}"},
            )
        # Link before looking for the data: a garbage collection setting an unreferenced copy
        # aside either sees this fresh link and puts it back, or is seen here as missing data.
        blob_path = paths.blob_data(digest)
        async with self.hooks.linking_blob(name, digest, status.size):
            await self.blobs.link(name, digest)
            if await self.driver.stat(blob_path) is None:
                await self.driver.move(data_path, blob_path)
        return status

    async def _ended_elsewhere(self, name: str, upload_id: str, digest: Digest) -> BlobInfo:
        """The session's data went while this request completed it: a DELETE of the session or
        a second completion of it, in another worker or replica, got there first.

        The blob is only stored if its data is in place under its digest (moved there by the
        other completion, verified by it): then this completion succeeds too. Otherwise the
        session is over and the client starts again (the spec's BLOB_UPLOAD_UNKNOWN); what this
        request linked points at no data and stays invisible, as after a crash."""
        self._hashes.pop(upload_id, None)
        try:
            info = await self.blobs.stat(name, digest)
        except OCIError:
            await self._forget(name, upload_id)
            raise _gone(upload_id) from None
        await self._forget(name, upload_id)
        return info

    async def monolithic(
        self,
        name: str,
        digest: Digest,
        body: AsyncIterator[bytes],
        content_length: int | None,
        ctx: RequestContext,
    ) -> BlobInfo:
        if content_length is not None:
            # Refused before anything is stored.
            await self.hooks.admitting(name, content_length, digest)
        status = await self.start(name)
        try:
            return await self.complete(
                name,
                upload_id=status.upload_id,
                digest=digest,
                body=body,
                ctx=ctx,
                content_length=content_length,
            )
        except BaseException:
            await self._forget(name, status.upload_id)
            raise

    async def cancel(self, name: str, upload_id: str) -> None:
        # After a chunk or completion of this session running in this process, not amid it.
        async with self._lock(upload_id):
            await self.status(name, upload_id)
            await self._forget(name, upload_id)

    async def _forget(self, name: str, upload_id: str) -> None:
        self._hashes.pop(upload_id, None)
        try:
            await self.driver.delete(paths.upload_dir(name, upload_id))
        except PathNotFoundError:
            pass

    async def _digest_of(self, name: str, upload_id: str, algorithm: str, size: int) -> str:
        state = self._hashes.get(upload_id)
        if state is None or state.algorithm != algorithm or state.offset > size:
            state = _HashState(algorithm, hashlib.new(algorithm), 0)
        # Catch up on bytes another process or an earlier run appended.
        if state.offset < size:
            async for chunk in self.driver.read(paths.upload_data(name, upload_id), state.offset):
                await asyncio.to_thread(state.hasher.update, chunk)
                state.offset += len(chunk)
        result: str = state.hasher.hexdigest()
        return result

    def _remember(self, upload_id: str, state: _HashState) -> None:
        self._hashes[upload_id] = state
        while len(self._hashes) > MAX_CACHED_HASHERS:
            self._hashes.popitem(last=False)


def _gone(upload_id: str) -> OCIError:
    return OCIError(
        ErrorCode.BLOB_UPLOAD_UNKNOWN,
        "the upload session was cancelled or completed by another request; start a new one",
        detail={"uuid": upload_id},
    )


async def _batches(body: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    buf = bytearray()
    async for chunk in body:
        buf += chunk
        if len(buf) >= size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)
