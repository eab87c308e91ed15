"""Filesystem storage driver: temporary file, fsync, rename; blocking calls run in threads."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from stat import S_ISDIR
from typing import Any, TypeVar

from registry.storage.driver import (
    FileInfo,
    FileWriter,
    Hasher,
    PathNotFoundError,
    StorageDriver,
)

T = TypeVar("T")
READ_CHUNK = 1 << 20
TMP_DIR = "_tmp"


class FilesystemDriver(StorageDriver):
    name = "filesystem"

    def __init__(self, root: str | os.PathLike[str], threads: int = 8) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / TMP_DIR).mkdir(exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fs")

    def _full(self, path: str) -> Path:
        # Paths come from the storage layout, never straight from a client; still refuse escapes.
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"invalid storage path {path!r}")
        return self.root.joinpath(*parts)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def local_path(self, path: str) -> str | None:
        return str(self._full(path))

    async def stat(self, path: str) -> FileInfo | None:
        full = self._full(path)

        def _stat() -> FileInfo | None:
            try:
                st = os.stat(full)
            except (FileNotFoundError, NotADirectoryError):
                return None
            return FileInfo(path, st.st_size, st.st_mtime_ns, S_ISDIR(st.st_mode))

        result: FileInfo | None = await self._run(_stat)
        return result

    async def get_content(self, path: str) -> bytes:
        full = self._full(path)

        def _read() -> bytes:
            try:
                return full.read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise PathNotFoundError(path) from None

        data: bytes = await self._run(_read)
        return data

    def _write_atomic(self, full: Path, data: bytes, durable: bool) -> None:
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / TMP_DIR / uuid.uuid4().hex
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        # A delete of the parent (a tag deleted while pushed again) may remove the directory
        # between the mkdir and the rename: make it again and go on, the write then wins.
        for _ in range(4):
            try:
                os.replace(tmp, full)
                return
            except FileNotFoundError:
                full.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, full)

    async def put_content(self, path: str, data: bytes, durable: bool = True) -> None:
        await self._run(self._write_atomic, self._full(path), data, durable)

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        full = self._full(path)
        try:
            f = await self._run(open, full, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
        try:
            await self._run(f.seek, offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk: bytes = await self._run(f.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await self._run(f.close)

    async def update_hash(
        self, path: str, hasher: Hasher, offset: int = 0, length: int | None = None
    ) -> int:
        full = self._full(path)

        # One thread call for the whole range: reading and hashing (hashlib lets go of the
        # GIL) without a hop to the event loop between chunks.
        def _feed() -> int:
            try:
                f = open(full, "rb")
            except (FileNotFoundError, NotADirectoryError):
                raise PathNotFoundError(path) from None
            count = 0
            with f:
                f.seek(offset)
                while length is None or count < length:
                    want = READ_CHUNK if length is None else min(READ_CHUNK, length - count)
                    chunk = f.read(want)
                    if not chunk:
                        break
                    hasher.update(chunk)
                    count += len(chunk)
            return count

        result: int = await self._run(_feed)
        return result

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        full = self._full(path)

        def _open() -> tuple[Any, int]:
            full.parent.mkdir(parents=True, exist_ok=True)
            f = open(full, "ab" if append else "wb")
            return f, os.fstat(f.fileno()).st_size

        f, size = await self._run(_open)
        return _FilesystemWriter(self, f, size)

    async def move(self, source: str, destination: str) -> None:
        src, dst = self._full(source), self._full(destination)

        def _move() -> None:
            if not src.exists():
                raise PathNotFoundError(source)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)

        await self._run(_move)

    async def delete(self, path: str) -> None:
        full = self._full(path)

        def _concurrent(function: Any, target: str, excinfo: Any) -> None:
            # A file written meanwhile (a tag pushed again while deleted) stays with its
            # directories, as if the delete came first; anything gone already is fine.
            error = excinfo[1]
            if isinstance(error, FileNotFoundError):
                return
            if isinstance(error, OSError) and error.errno == errno.ENOTEMPTY:
                return
            raise error

        def _delete() -> None:
            try:
                if full.is_dir():
                    shutil.rmtree(full, onerror=_concurrent)
                else:
                    full.unlink()
            except FileNotFoundError:
                raise PathNotFoundError(path) from None

        await self._run(_delete)

    async def list(self, path: str) -> list[str]:
        full = self._full(path)

        def _list() -> list[str]:
            try:
                return os.listdir(full)
            except (FileNotFoundError, NotADirectoryError):
                return []

        names: list[str] = await self._run(_list)
        return names

    async def close(self) -> None:
        self._executor.shutdown(wait=False)


class _FilesystemWriter(FileWriter):
    def __init__(self, driver: FilesystemDriver, f: Any, size: int) -> None:
        self._driver = driver
        self._f = f
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        await self._driver._run(self._f.write, data)
        self._size += len(data)

    async def truncate(self, size: int) -> None:
        def _truncate() -> None:
            self._f.flush()
            self._f.truncate(size)

        await self._driver._run(_truncate)
        self._size = size

    async def commit(self) -> None:
        def _commit() -> None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

        await self._driver._run(_commit)

    async def close(self) -> None:
        await self._driver._run(self._f.close)
