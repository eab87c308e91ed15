"""The on-disk outbox: events NATS has not acknowledged yet, kept in order across crashes.

One file per entry, named by a growing sequence number, so order is the name order and taking
an entry out is one unlink. An entry is written to a temporary name, fsynced, renamed and the
directory fsynced before `append` returns: once the HTTP response goes out, the event survives
a crash. Each file holds a small header (magic, length, CRC-32) so that a torn or rotted file is
recognised, reported and moved aside instead of being published or crashing the registry.

All file work runs on one dedicated thread, off the event loop and in submission order.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

MAGIC = b"NBX1"
HEADER = struct.Struct("!4sII")  # magic, payload length, CRC-32 of the payload
# NATS' default max_payload: an entry larger than that could never be published anyway.
MAX_ENTRY = 1024 * 1024
SUFFIX = ".event"
TMP_PREFIX = ".tmp-"
LOCK_FILE = "lock"
QUARANTINE = "quarantine"


class OutboxLocked(Exception):
    """Another process holds this outbox directory."""


class OutboxEntryError(Exception):
    """An entry that cannot be read back: torn, corrupted or oversized."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"outbox entry {seq}: {reason}")
        self.seq = seq
        self.reason = reason


def encode(payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode(seq: int, data: bytes, max_entry: int = MAX_ENTRY) -> bytes:
    if len(data) < HEADER.size:
        raise OutboxEntryError(seq, f"truncated ({len(data)} bytes)")
    magic, length, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise OutboxEntryError(seq, "not an outbox entry (bad magic)")
    if length > max_entry:
        raise OutboxEntryError(seq, f"oversized ({length} bytes, limit {max_entry})")
    payload = data[HEADER.size :]
    if len(payload) != length:
        raise OutboxEntryError(seq, f"length {len(payload)} differs from header {length}")
    if zlib.crc32(payload) != crc:
        raise OutboxEntryError(seq, "checksum mismatch")
    return payload


class Outbox:
    def __init__(self, directory: Path, max_entry: int = MAX_ENTRY) -> None:
        self.directory = directory
        self.max_entry = max_entry
        self._seqs: deque[int] = deque()
        self._next = 1
        self._lock_fd = -1
        self._dir_fd = -1
        self._order = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")

    @property
    def depth(self) -> int:
        return len(self._seqs)

    def siblings(self) -> list[Path]:
        """The other outbox directories beside this one (other workers', running or not)."""
        parent = self.directory.parent
        if not parent.is_dir():
            return []
        return sorted(
            path
            for path in parent.iterdir()
            if path != self.directory and path.is_dir() and (path / LOCK_FILE).exists()
        )

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{SUFFIX}"

    async def _io(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- opening -----------------------------------------------------------------------

    async def open(self) -> None:
        """Lock the directory and load the entries a previous run left."""
        self._seqs = deque(await self._io(self._open_sync))
        self._next = (self._seqs[-1] + 1) if self._seqs else 1

    def _open_sync(self) -> list[int]:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise OutboxLocked(f"outbox {self.directory} is in use by another process") from None
        self._lock_fd = lock_fd
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        seqs = []
        for entry in os.scandir(self.directory):
            if entry.name.startswith(TMP_PREFIX):
                # Never renamed into place, so never acknowledged to a client.
                os.unlink(entry.path)
            elif entry.name.endswith(SUFFIX) and entry.name[: -len(SUFFIX)].isdigit():
                seqs.append(int(entry.name[: -len(SUFFIX)]))
        return sorted(seqs)

    async def close(self) -> None:
        await self._io(self._close_sync)
        self._executor.shutdown(wait=True)

    def abandon(self) -> None:
        """Let go of an outbox that did not open (its lock is another's)."""
        self._close_sync()
        self._executor.shutdown(wait=False)

    def _close_sync(self) -> None:
        for fd in (self._dir_fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._dir_fd = self._lock_fd = -1

    # -- entries -----------------------------------------------------------------------

    async def append(self, payload: bytes) -> int:
        """Store ``payload`` durably behind every entry already there."""
        if len(payload) > self.max_entry:
            raise ValueError(f"outbox entry of {len(payload)} bytes exceeds {self.max_entry}")
        # The lock makes the order of entries the order of calls.
        async with self._order:
            seq = self._next
            self._next += 1
            await self._io(self._write_sync, seq, encode(payload))
            self._seqs.append(seq)
        return seq

    def _write_sync(self, seq: int, data: bytes) -> None:
        tmp = self.directory / f"{TMP_PREFIX}{seq}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self._path(seq))
        os.fsync(self._dir_fd)

    async def head(self) -> tuple[int, bytes] | None:
        """The oldest entry, or None when empty; OutboxEntryError when it is unreadable."""
        if not self._seqs:
            return None
        seq = self._seqs[0]
        return seq, await self._io(self._read_sync, seq)

    def _read_sync(self, seq: int) -> bytes:
        path = self._path(seq)
        try:
            size = path.stat().st_size
            if size > HEADER.size + self.max_entry:
                raise OutboxEntryError(seq, f"oversized file ({size} bytes)")
            data = path.read_bytes()
        except FileNotFoundError:
            raise OutboxEntryError(seq, "file vanished") from None
        return decode(seq, data, self.max_entry)

    async def remove(self, seq: int) -> None:
        """Take out an entry that JetStream has acknowledged.

        No directory fsync: an entry that comes back after a crash is published again and
        de-duplicated by its event id.
        """
        await self._io(self._unlink_sync, seq)
        self._forget(seq)

    def _unlink_sync(self, seq: int) -> None:
        self._path(seq).unlink(missing_ok=True)

    async def quarantine(self, seq: int) -> Path:
        """Move an unreadable entry aside (kept for inspection) and out of the queue."""
        target = await self._io(self._quarantine_sync, seq)
        self._forget(seq)
        return target

    def _quarantine_sync(self, seq: int) -> Path:
        target = self.directory / QUARANTINE / self._path(seq).name
        target.parent.mkdir(exist_ok=True)
        try:
            os.rename(self._path(seq), target)
        except FileNotFoundError:
            pass
        return target

    def _forget(self, seq: int) -> None:
        if self._seqs and self._seqs[0] == seq:
            self._seqs.popleft()
        else:
            self._seqs.remove(seq)
