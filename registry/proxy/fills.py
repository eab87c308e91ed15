"""A blob on its way from an upstream: the state every waiting client reads it by.

The fill (run by the cache service) writes the upstream's bytes to storage and, as they come,
to a spool file on local disk; a client reads the spool up to what has been written, so it never
waits for the whole blob and only one download runs. The last byte waits for the digest check,
so a response completes only once the blob is verified and committed; a client that started
after the commit reads storage; when the fill fails every client's stream ends in that error (the
connection is cut, as a client must never take a partial blob for a whole one).
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from registry.errors import OCIError
from registry.proxy.pulls import FillFailedError

READ_CHUNK = 1 << 20


class FillState(enum.Enum):
    WAITING = "waiting"  # for the upstream's answer, or for another worker's fill
    STREAMING = "streaming"  # bytes arrive in the spool
    DONE = "done"  # committed to storage: read it there
    FAILED = "failed"


class BlobFill:
    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.state = FillState.WAITING
        # The upstream's Content-Length (None when it sent none), or the stored size.
        self.size: int | None = None
        self.written = 0
        self.error: OCIError | None = None
        self._changed = asyncio.Condition()

    async def _set(self, state: FillState) -> None:
        async with self._changed:
            self.state = state
            self._changed.notify_all()

    async def streaming(self, size: int | None) -> None:
        self.size = size
        await self._set(FillState.STREAMING)

    async def wrote(self, count: int) -> None:
        async with self._changed:
            self.written += count
            self._changed.notify_all()

    async def done(self, size: int) -> None:
        self.size = size
        await self._set(FillState.DONE)

    async def failed(self, error: OCIError) -> None:
        self.error = error
        await self._set(FillState.FAILED)

    async def ready(self) -> FillState:
        """Wait until bytes can be read (STREAMING) or read from storage (DONE); raise the
        fill's error when it failed before that."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.state is not FillState.WAITING)
        if self.state is FillState.FAILED:
            assert self.error is not None
            raise self.error
        return self.state

    def _readable(self, last: int | None) -> int:
        """How far a client wanting bytes up to ``last`` (inclusive; None: to the end) may read
        now: all that was written, but while the digest is unchecked not the last byte it
        wants, so a response completes only with bytes of a verified blob."""
        end = self.written if last is None else min(self.written, last + 1)
        if self.state is not FillState.STREAMING:
            return end
        if last is not None:
            return min(end, last)
        if self.size is not None:
            return min(end, self.size - 1)
        return end

    async def chunks(
        self,
        stored: Callable[[int, int | None], AsyncIterator[bytes]],
        first: int = 0,
        last: int | None = None,
    ) -> AsyncIterator[bytes]:
        """Bytes ``first`` to ``last`` (inclusive; None: to the end): the spool while it grows,
        then ``stored(offset, length)``."""
        offset = first
        fd: int | None = None
        try:
            while True:
                async with self._changed:
                    while self._readable(last) <= offset and self.state is FillState.STREAMING:
                        await self._changed.wait()
                    state, readable = self.state, self._readable(last)
                if state is FillState.FAILED:
                    assert self.error is not None
                    raise FillFailedError(self.error)
                if state is FillState.DONE and (fd is None or offset >= readable):
                    end = last + 1 if last is not None else self.size
                    if end is not None and offset >= end:
                        return
                    async for chunk in stored(offset, None if end is None else end - offset):
                        yield chunk
                    return
                if fd is None:
                    try:
                        fd = os.open(self.spool, os.O_RDONLY)
                    except FileNotFoundError:
                        # The fill just ended and took its spool: the state says what next.
                        continue
                while offset < readable:
                    chunk = await asyncio.to_thread(
                        os.pread, fd, min(READ_CHUNK, readable - offset), offset
                    )
                    if not chunk:
                        break
                    offset += len(chunk)
                    yield chunk
        finally:
            if fd is not None:
                os.close(fd)
