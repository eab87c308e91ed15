"""One upstream request at a time per key, among the tasks of a process and its sibling workers.

Inside a process an asyncio lock per key queues the tasks; across the worker processes of one
registry an exclusive `flock` on a file of the key (in a local directory of the registry's data
directory) does. Whoever gets both first does the work; the others wait and, once they hold the
key, find the result in storage. A crashed holder's lock goes with its process. The holder removes
the lock file before it lets go (a waiter that then locks a file no longer there starts again),
so the directory holds only the keys in flight, not one file per key ever fetched. Replicas on
other machines (shared S3 storage) do not share these locks: each may fetch once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

# How often a worker waiting for another worker's lock tries again.
POLL_SECONDS = 0.05


class SingleFlight:
    def __init__(self, lock_dir: Path) -> None:
        self.lock_dir = lock_dir
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _path(self, key: str) -> Path:
        return self.lock_dir / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".lock")

    def busy(self, key: str) -> bool:
        """Whether a task of this process holds or waits for ``key``."""
        lock = self._locks.get(key)
        return lock is not None and lock.locked()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[bool]:
        """Hold ``key``; yields True when someone else held it first (the caller waited)."""
        lock = self._lock(key)
        waited = lock.locked()
        async with lock:
            path = self._path(key)
            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    while True:
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                            break
                        except BlockingIOError:
                            waited = True
                            await asyncio.sleep(POLL_SECONDS)
                    if not _still_linked(fd, path):
                        # Its holder removed the file once done: lock the one there now.
                        waited = True
                        continue
                    try:
                        yield waited
                    finally:
                        # Removed while held, so no one can lock it after this and still
                        # think it the key's lock (they find it unlinked and start over).
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    return
                finally:
                    os.close(fd)

    def remove_stale(self) -> int:
        """Remove the lock files nobody holds (left by a crash, or by an older version that
        kept one per key); a held one stays with its holder. Returns how many went."""
        removed = 0
        for path in self.lock_dir.glob("*.lock"):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                if _still_linked(fd, path):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed += 1
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        return removed


def _still_linked(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
