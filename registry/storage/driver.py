"""The storage driver interface: paths and bytes, nothing of OCI.

Modelled on the CNCF Distribution driver: small-content get/put, streamed ranged reads,
append-able writers with an explicit commit, atomic moves, listing and deletion. A filesystem
driver implements it today; an object-store driver can implement it without touching the API.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

# Chunks at least this large are hashed in a thread, off the event loop.
_HASH_OFFLOAD = 256 * 1024


class Hasher(Protocol):
    """What `update_hash` feeds: a hashlib object, or anything with the same `update`."""

    def update(self, data: bytes, /) -> None: ...


class PathNotFoundError(Exception):
    """The path does not exist in the store."""

    def __init__(self, path: str) -> None:
        super().__init__(f"path not found: {path}")
        self.path = path


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    modified_ns: int
    is_dir: bool


class FileWriter(abc.ABC):
    """An open, append-only file; invisible to readers of other paths until moved."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Bytes in the file so far, including what earlier writers appended."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def truncate(self, size: int) -> None:
        """Drop everything after ``size``: how a failed chunk is undone."""

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make what was written durable (fsync) and close the writer."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close without the durability promise of commit."""


class StorageDriver(abc.ABC):
    """Async key/value-like storage of byte files under slash-separated paths."""

    name: str = "abstract"

    @abc.abstractmethod
    async def stat(self, path: str) -> FileInfo | None: ...

    @abc.abstractmethod
    async def get_content(self, path: str) -> bytes:
        """Whole content of a small file; raises PathNotFoundError."""

    @abc.abstractmethod
    async def put_content(self, path: str, data: bytes, durable: bool = True) -> None:
        """Write a small file atomically: readers see the old or the new content, never a mix.

        ``durable``: on stable storage before this returns; False for state a crash may lose
        (an upload session's start time: the client starts the upload again)."""

    @abc.abstractmethod
    def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (or to the end) from ``offset``; raises PathNotFoundError."""

    @abc.abstractmethod
    async def writer(self, path: str, append: bool = False) -> FileWriter:
        """Open ``path`` for appending, continuing what earlier writers (anywhere) left.

        ``stat`` reports a written file's size once its writer is closed; ``read`` and ``move``
        see its bytes once committed (an object store cannot read an unfinished upload).
        """

    @abc.abstractmethod
    async def move(self, source: str, destination: str) -> None:
        """Atomically replace ``destination`` with ``source``."""

    @abc.abstractmethod
    async def delete(self, path: str) -> None:
        """Delete a file or a whole subtree; raises PathNotFoundError."""

    @abc.abstractmethod
    async def list(self, path: str) -> list[str]:
        """Names of the direct children of a directory; [] when it does not exist."""

    async def update_hash(
        self, path: str, hasher: Hasher, offset: int = 0, length: int | None = None
    ) -> int:
        """Feed ``length`` bytes (or to the end) from ``offset`` into ``hasher``; how many
        there were. Raises PathNotFoundError. A driver may do it in fewer steps than `read`."""
        count = 0
        async for chunk in self.read(path, offset, length):
            if len(chunk) >= _HASH_OFFLOAD:
                await asyncio.to_thread(hasher.update, chunk)
            else:
                hasher.update(chunk)
            count += len(chunk)
        return count

    def local_path(self, path: str) -> str | None:
        """A local file path for zero-copy serving, when the driver has one."""
        return None

    async def url_for(self, path: str, expires: int) -> str | None:
        """A URL that clients may fetch the file from for ``expires`` seconds, or None."""
        return None

    async def open(self) -> None:  # noqa: B027 - most drivers need no connection
        """Connect and check the store at start; raise with a clear message when unusable."""

    async def close(self) -> None:  # noqa: B027 - most drivers hold nothing to release
        """Release connections and threads."""
