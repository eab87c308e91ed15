"""One upstream request at a time per key, among the tasks of a process and its sibling workers.

Inside a process an asyncio lock per key queues the tasks; across the worker processes of one
registry an exclusive `flock` on a file of the key (in a local directory of the registry's data
directory) does. Whoever gets both first does the work; the others wait and, once they hold the
key, find the result in storage. A crashed holder's lock goes with its process. Replicas on
other machines (shared S3 storage) do not share these locks: each may fetch once.
"""

from __future__ import annotations

import asyncio
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
            fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        waited = True
                        await asyncio.sleep(POLL_SECONDS)
                try:
                    yield waited
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
