"""The storage driver contract, held by the filesystem and the S3 driver alike.

What the registry relies on: small files replaced atomically, ranged streaming reads, writers
that continue a file another writer (or process, or replica) left, a cut back after a failed
chunk, commit, move, subtree deletion and listing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from registry.storage.driver import PathNotFoundError, StorageDriver
from registry.storage.s3 import MIN_PART_SIZE, S3Driver
from tests.storage.conftest import DriverFactory

MiB = 1 << 20


def payload(size: int, seed: int = 0) -> bytes:
    """Bytes that differ at every offset, so a misplaced range shows."""
    block = os.urandom(4096) if seed == 0 else bytes((seed + i) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


async def read_all(driver: StorageDriver, path: str, offset: int = 0, length: int | None = None):
    return b"".join([chunk async for chunk in driver.read(path, offset, length)])


async def write_file(driver: StorageDriver, path: str, data: bytes, append: bool = True) -> None:
    w = await driver.writer(path, append=append)
    for start in range(0, len(data), MiB):
        await w.write(data[start : start + MiB])
    await w.commit()


async def test_stat_reports_files_directories_and_absence(driver: StorageDriver) -> None:
    assert await driver.stat("a/b/file") is None
    await driver.put_content("a/b/file", b"12345")
    info = await driver.stat("a/b/file")
    assert info is not None and info.size == 5 and not info.is_dir
    assert info.modified_ns > 0
    directory = await driver.stat("a/b")
    assert directory is not None and directory.is_dir
    assert await driver.stat("a/b/fil") is None
    assert await driver.stat("a/b/file/deeper") is None


async def test_put_and_get_content(driver: StorageDriver) -> None:
    with pytest.raises(PathNotFoundError):
        await driver.get_content("missing/link")
    await driver.put_content("x/link", b"sha256:one")
    assert await driver.get_content("x/link") == b"sha256:one"
    await driver.put_content("x/link", b"sha256:two")
    assert await driver.get_content("x/link") == b"sha256:two"
    await driver.put_content("x/empty", b"")
    assert await driver.get_content("x/empty") == b""
    # Not forced to disk, but written and replaced the same way.
    await driver.put_content("x/session", b"1", durable=False)
    await driver.put_content("x/session", b"2", durable=False)
    assert await driver.get_content("x/session") == b"2"


async def test_put_content_is_atomic_under_concurrent_readers(driver: StorageDriver) -> None:
    versions = [payload(256 * 1024, seed=i) for i in range(1, 7)]
    await driver.put_content("tag/current/link", versions[0])

    async def reader() -> set[bytes]:
        seen = set()
        for _ in range(12):
            seen.add(await driver.get_content("tag/current/link"))
        return seen

    results = await asyncio.gather(
        *(driver.put_content("tag/current/link", v) for v in versions[1:]),
        reader(),
        reader(),
    )
    for seen in results[-2:]:
        assert seen <= set(versions), "a reader saw a mix of two versions"
    assert await driver.get_content("tag/current/link") in versions[1:]


async def test_ranged_reads(driver: StorageDriver) -> None:
    data = payload(3 * MiB + 123)
    await driver.put_content("blobs/one/data", data)
    assert await read_all(driver, "blobs/one/data") == data
    assert await read_all(driver, "blobs/one/data", 10) == data[10:]
    assert await read_all(driver, "blobs/one/data", 5, 17) == data[5:22]
    assert await read_all(driver, "blobs/one/data", MiB - 3, 2 * MiB) == data[MiB - 3 : 3 * MiB - 3]
    assert await read_all(driver, "blobs/one/data", len(data) - 1) == data[-1:]
    assert await read_all(driver, "blobs/one/data", len(data)) == b""
    assert await read_all(driver, "blobs/one/data", 0, 0) == b""
    with pytest.raises(PathNotFoundError):
        await read_all(driver, "blobs/none/data")
    with pytest.raises(PathNotFoundError):
        await read_all(driver, "blobs/none/data", 0, 0)


async def test_update_hash_feeds_the_range_it_reads(driver: StorageDriver) -> None:
    data = payload(3 * MiB + 123)
    await driver.put_content("blobs/one/data", data)

    async def hashed(offset: int = 0, length: int | None = None) -> tuple[int, str]:
        hasher = hashlib.sha256()
        count = await driver.update_hash("blobs/one/data", hasher, offset, length)
        return count, hasher.hexdigest()

    def expected(part: bytes) -> tuple[int, str]:
        return len(part), hashlib.sha256(part).hexdigest()

    assert await hashed() == expected(data)
    assert await hashed(10) == expected(data[10:])
    assert await hashed(5, 17) == expected(data[5:22])
    assert await hashed(MiB - 3, 2 * MiB) == expected(data[MiB - 3 : 3 * MiB - 3])
    assert await hashed(len(data) - 5, MiB) == expected(data[-5:])
    assert await hashed(len(data)) == expected(b"")
    # Pieces fed one after another hash as the whole.
    hasher = hashlib.sha256()
    offset = 0
    while offset < len(data):
        offset += await driver.update_hash("blobs/one/data", hasher, offset, MiB)
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    with pytest.raises(PathNotFoundError):
        await driver.update_hash("blobs/none/data", hashlib.sha256())


async def test_writer_continues_across_writer_instances_and_processes(
    open_driver: DriverFactory,
) -> None:
    """An upload resumed on another replica: each chunk through a different driver."""
    drivers = [open_driver() for _ in range(3)]
    chunks = [payload(MIN_PART_SIZE + 2 * MiB + 7, 1), payload(3 * MiB, 2), payload(4 * MiB, 3)]
    expected = b""
    for driver, chunk in zip(drivers, chunks, strict=True):
        w = await driver.writer("up/u1/data", append=True)
        assert w.size == len(expected)
        for start in range(0, len(chunk), MiB):
            await w.write(chunk[start : start + MiB])
        await w.close()
        expected += chunk
        info = await drivers[0].stat("up/u1/data")
        assert info is not None and info.size == len(expected) and not info.is_dir
        assert await drivers[2].list("up/u1") == ["data"]
    w = await drivers[1].writer("up/u1/data", append=True)
    assert w.size == len(expected)
    await w.commit()
    assert await read_all(drivers[2], "up/u1/data") == expected
    info = await drivers[0].stat("up/u1/data")
    assert info is not None and info.size == len(expected)
    assert await drivers[0].list("up/u1") == ["data"]


async def test_writer_without_append_starts_over(driver: StorageDriver) -> None:
    await write_file(driver, "w/data", payload(2 * MiB, 1))
    w = await driver.writer("w/data", append=False)
    assert w.size == 0
    await w.write(b"fresh")
    await w.commit()
    assert await driver.get_content("w/data") == b"fresh"


async def test_an_opened_writer_makes_an_empty_file(driver: StorageDriver) -> None:
    w = await driver.writer("e/data", append=True)
    await w.close()
    info = await driver.stat("e/data")
    assert info is not None and info.size == 0
    w = await driver.writer("e/data", append=True)
    await w.commit()
    assert await driver.get_content("e/data") == b""


async def test_truncate_undoes_a_failed_chunk(open_driver: DriverFactory) -> None:
    """A chunk that fails half-way, even after whole parts went out, leaves no trace."""
    first, second = open_driver(), open_driver()
    head = payload(MIN_PART_SIZE + MiB, 1)
    await write_partial(first, "t/data", head)
    w = await second.writer("t/data", append=True)
    start = w.size
    await w.write(payload(2 * MIN_PART_SIZE + 5, 2))  # more than a part: some went out
    await w.truncate(start)
    assert w.size == start
    await w.close()
    info = await first.stat("t/data")
    assert info is not None and info.size == len(head)
    tail = payload(MIN_PART_SIZE + 3, 3)
    await write_file(first, "t/data", tail)
    assert await read_all(second, "t/data") == head + tail


async def test_truncate_within_the_last_part(driver: StorageDriver) -> None:
    w = await driver.writer("t2/data", append=True)
    await w.write(b"abcdefgh")
    await w.truncate(3)
    assert w.size == 3
    await w.write(b"XYZ")
    await w.commit()
    assert await driver.get_content("t2/data") == b"abcXYZ"


async def test_append_to_a_committed_file(driver: StorageDriver) -> None:
    small, large = payload(1000, 1), payload(MIN_PART_SIZE + 10, 2)
    await write_file(driver, "c/small", small)
    await write_file(driver, "c/large", large)
    for path, base in (("c/small", small), ("c/large", large)):
        w = await driver.writer(path, append=True)
        assert w.size == len(base)
        await w.write(b"more")
        await w.close()
        info = await driver.stat(path)
        assert info is not None and info.size == len(base) + 4
        await write_file(driver, path, b"")
        assert await read_all(driver, path) == base + b"more"


async def test_commit_without_writes_keeps_a_committed_file(driver: StorageDriver) -> None:
    data = payload(MiB, 4)
    await write_file(driver, "k/data", data)
    await write_file(driver, "k/data", b"")
    assert await read_all(driver, "k/data") == data


async def test_move_replaces_the_destination(driver: StorageDriver) -> None:
    data = payload(MIN_PART_SIZE + MiB, 5)
    await write_file(driver, "uploads/u/data", data)
    await driver.put_content("blobs/b/data", b"old")
    await driver.move("uploads/u/data", "blobs/b/data")
    assert await driver.stat("uploads/u/data") is None
    assert await read_all(driver, "blobs/b/data") == data
    with pytest.raises(PathNotFoundError):
        await driver.move("uploads/u/data", "blobs/c/data")


async def test_delete_removes_a_subtree_with_unfinished_writers(driver: StorageDriver) -> None:
    await driver.put_content("r/n/_uploads/u/startedat", b"1")
    await write_partial(driver, "r/n/_uploads/u/data", payload(MIN_PART_SIZE + 5, 6))
    await driver.put_content("r/n/_layers/sha256/aa/link", b"x")
    await driver.put_content("r/nn/_layers/sha256/bb/link", b"y")  # a sibling with a prefix
    await driver.delete("r/n/_uploads/u")
    assert await driver.stat("r/n/_uploads/u/data") is None
    assert await driver.list("r/n/_uploads") == []
    await driver.delete("r/n")
    assert await driver.list("r") == ["nn"]
    assert await driver.get_content("r/nn/_layers/sha256/bb/link") == b"y"
    await driver.delete("r/nn/_layers/sha256/bb/link")
    assert await driver.stat("r/nn/_layers/sha256/bb/link") is None
    with pytest.raises(PathNotFoundError):
        await driver.delete("r/n")
    if isinstance(driver, S3Driver):
        # Aborted, not left to hold storage.
        s3 = await driver._s3()
        uploads = await s3.list_multipart_uploads(Bucket=driver.bucket)
        assert uploads.get("Uploads", []) == []


async def test_list_direct_children(driver: StorageDriver) -> None:
    assert await driver.list("nothing/here") == []
    for name in ("b", "a", "c-d", "c.d"):
        await driver.put_content(f"tags/{name}/current/link", b"x")
    await driver.put_content("tags/file", b"x")
    await write_partial(driver, "tags/partial", b"abc")
    assert sorted(await driver.list("tags")) == ["a", "b", "c-d", "c.d", "file", "partial"]
    assert await driver.list("tags/a") == ["current"]
    assert await driver.list("tags/file") == []
    assert "tags" in await driver.list("")


async def test_list_pages_through_many_children(driver: StorageDriver) -> None:
    if isinstance(driver, S3Driver):
        driver.list_page_size = 3  # S3 pages hold 1000; small pages show the paging
    names = [f"repo{i:02d}" for i in range(11)]
    await asyncio.gather(*(driver.put_content(f"cat/{n}/_layers/link", b"x") for n in names))
    await driver.put_content("cat/top", b"x")
    assert sorted(await driver.list("cat")) == [*names, "top"]
    await driver.delete("cat")
    assert await driver.list("cat") == []


async def write_partial(driver: StorageDriver, path: str, data: bytes) -> None:
    """Written and closed, not committed: an upload in progress."""
    w = await driver.writer(path, append=True)
    for start in range(0, len(data), MiB):
        await w.write(data[start : start + MiB])
    await w.close()
