"""Storage quotas per repository: bytes (each distinct blob and manifest once) and tags.

Usage is read from the repository's links (layers and manifest revisions) with the size of
their data (O(repository size): a listing and a stat per blob), then kept per repository for
`ttl` seconds and adjusted by each push this process admits, so a push costs no listing. It
is read again from storage after a delete in this process (tag, manifest, retention), after
a garbage collection here (which removes data and leaves dangling links), when a figure is
asked for (GetStats), and at the latest after `ttl`: what another replica pushed or deleted
is seen within that time. A push is checked under a lock per repository in this process, so
two pushes racing for the last bytes cannot both get them. Replicas behind one load balancer
each hold their own lock and figure: within one `ttl`, pushes to one repository through
several replicas can together cross the limit by what the others admitted meanwhile.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from registry.errors import ErrorCode, OCIError
from registry.lifecycle.rules import QuotaRule
from registry.reference import Digest
from registry.storage import paths
from registry.storage.driver import StorageDriver

# Repositories whose figures are kept at most (the oldest read goes first).
_MAX_CACHED = 10_000


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    repository: str
    rule: str
    bytes_used: int
    bytes_limit: int
    tags_used: int
    tags_limit: int


@dataclass(slots=True)
class _Usage:
    bytes: int
    tags: int
    digests: set[str]
    # When it was read from storage (monotonic seconds).
    read_at: float = 0.0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class QuotaService:
    def __init__(self, driver: StorageDriver, ttl: float = 5.0) -> None:
        self.driver = driver
        # 0: read from storage every time.
        self.ttl = ttl
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._cached: dict[str, _Usage] = {}
        # Bumped by each forget: a read begun before it is not kept.
        self._generation = 0

    def forget(self, name: str | None = None) -> None:
        """Read ``name``'s usage (every repository's, None) from storage next time."""
        self._generation += 1
        if name is None:
            self._cached.clear()
        else:
            self._cached.pop(name, None)

    def lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def _digests(self, root: str) -> set[str]:
        found: set[str] = set()
        for algorithm in await self.driver.list(root):
            for hex_ in await self.driver.list(f"{root}/{algorithm}"):
                found.add(f"{algorithm}:{hex_}")
        return found

    async def _size(self, digest: str) -> int | None:
        """The stored size, None once the data is gone (garbage collection leaves links)."""
        info = await self.driver.stat(paths.blob_data(Digest.parse(digest)))
        return None if info is None else info.size

    async def _usage(self, name: str, fresh: bool = False) -> _Usage:
        cached = self._cached.get(name)
        if not fresh and cached is not None and time.monotonic() - cached.read_at < self.ttl:
            return cached
        generation = self._generation
        used = await self._read(name)
        if self.ttl > 0 and generation == self._generation:
            self._cached[name] = used
        if len(self._cached) > _MAX_CACHED:
            self._cached.pop(next(iter(self._cached)))
        return used

    async def _read(self, name: str) -> _Usage:
        started = time.monotonic()
        layers, revisions, tags = await asyncio.gather(
            self._digests(paths.layers_root(name)),
            self._digests(paths.revisions_root(name)),
            self.driver.list(paths.tags_root(name)),
        )
        digests = sorted(layers | revisions)
        sizes = await asyncio.gather(*(self._size(d) for d in digests))
        present = {d: size for d, size in zip(digests, sizes, strict=True) if size is not None}
        return _Usage(sum(present.values()), len(tags), set(present), started)

    async def usage(self, name: str, rule: QuotaRule, fresh: bool = False) -> QuotaUsage:
        """The figures of a repository; ``fresh``: read from storage (and kept)."""
        used = await self._usage(name, fresh)
        return QuotaUsage(name, rule.name, used.bytes, rule.bytes, used.tags, rule.tags)

    def _refuse(self, rule: QuotaRule, name: str, used: int, adding: int) -> OCIError:
        return OCIError(
            ErrorCode.DENIED,
            f"storage quota of {name} exceeded (rule {rule.name!r}): using {used} bytes "
            f"({_human(used)}) of {rule.bytes} ({_human(rule.bytes)}); this push adds "
            f"{adding} bytes",
            detail={"rule": rule.name, "used": used, "limit": rule.bytes, "adding": adding},
        )

    async def admit(
        self, rule: QuotaRule, name: str, size: int, digest: Digest | None = None
    ) -> None:
        """An early look (POST, PATCH): refuse an upload that cannot fit."""
        if not rule.bytes:
            return
        used = await self._usage(name)
        if digest is not None and str(digest) in used.digests:
            return
        if used.bytes + size > rule.bytes:
            raise self._refuse(rule, name, used.bytes, size)

    @asynccontextmanager
    async def adding(
        self, rule: QuotaRule, name: str, digest: Digest, size: int, new_tag: bool = False
    ) -> AsyncIterator[None]:
        """The binding check: held locked while the content is linked into the repository."""
        async with self.lock(name):
            used = await self._usage(name)
            adding = 0 if str(digest) in used.digests else size
            if rule.bytes and adding and used.bytes + adding > rule.bytes:
                raise self._refuse(rule, name, used.bytes, adding)
            if rule.tags and new_tag and used.tags + 1 > rule.tags:
                raise OCIError(
                    ErrorCode.DENIED,
                    f"tag quota of {name} exceeded (rule {rule.name!r}): {used.tags} tags of "
                    f"{rule.tags}",
                    detail={"rule": rule.name, "used": used.tags, "limit": rule.tags},
                )
            yield
            # Linked: the kept figure follows without a listing (it is the object read above
            # unless a delete made it be forgotten meanwhile).
            if self._cached.get(name) is used:
                if adding:
                    used.digests.add(str(digest))
                    used.bytes += adding
                if new_tag:
                    used.tags += 1
