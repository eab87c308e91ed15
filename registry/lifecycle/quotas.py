"""Storage quotas per repository: bytes (each distinct blob and manifest once) and tags.

Usage is read from the repository's links (layers and manifest revisions) with the size of
their data each time a push needs it, so deletes and garbage collection (which removes the
data and leaves dangling links) are reflected as soon as they happen. A push is checked under
a lock per repository in this process, so two pushes racing for the last bytes cannot both get them.
Replicas behind one load balancer each hold their own lock: two replicas can each admit one
push at the same instant (the limit can then be crossed by at most one push per replica).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from registry.errors import ErrorCode, OCIError
from registry.lifecycle.rules import QuotaRule
from registry.reference import Digest
from registry.storage import paths
from registry.storage.driver import StorageDriver


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    repository: str
    rule: str
    bytes_used: int
    bytes_limit: int
    tags_used: int
    tags_limit: int


@dataclass(frozen=True, slots=True)
class _Usage:
    bytes: int
    tags: int
    digests: frozenset[str]


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class QuotaService:
    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

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

    async def _usage(self, name: str) -> _Usage:
        layers, revisions, tags = await asyncio.gather(
            self._digests(paths.layers_root(name)),
            self._digests(paths.revisions_root(name)),
            self.driver.list(paths.tags_root(name)),
        )
        digests = sorted(layers | revisions)
        sizes = await asyncio.gather(*(self._size(d) for d in digests))
        present = {d: size for d, size in zip(digests, sizes, strict=True) if size is not None}
        return _Usage(sum(present.values()), len(tags), frozenset(present))

    async def usage(self, name: str, rule: QuotaRule) -> QuotaUsage:
        used = await self._usage(name)
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
