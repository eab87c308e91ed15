"""What the cache keeps about its content, in the storage driver beside the content itself.

A tag's record says which digest the upstream gave for it and when (the clock of its
time-to-live); a content record says that a blob or manifest was filled from an upstream rather
than pushed, which eviction needs. Both carry when they were last pulled (`used_at`), written in
batches by `usage.UsageLog`, not on every pull. Small JSON files, written atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from registry.errors import OCIError
from registry.reference import Digest
from registry.storage import paths
from registry.storage.driver import PathNotFoundError, StorageDriver

CONTENT_ROOT = f"{paths.PROXY}/content"
TAGS_ROOT = f"{paths.PROXY}/{paths.REPOSITORIES}"
TAGS = "_tags"


@dataclass(frozen=True, slots=True)
class TagRecord:
    digest: str
    upstream: str
    # Unix time of the last fetch or revalidation that confirmed the digest.
    fetched_at: float
    # Unix time of the last pull recorded (0: none since the fetch).
    used_at: float = 0.0

    def fresh(self, ttl: float, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) - self.fetched_at < ttl

    @property
    def last_use(self) -> float:
        return max(self.fetched_at, self.used_at)


@dataclass(frozen=True, slots=True)
class ContentRecord:
    upstream: str
    repository: str
    kind: str  # "blob" or "manifest"
    size: int
    fetched_at: float
    used_at: float = 0.0

    @property
    def last_use(self) -> float:
        return max(self.fetched_at, self.used_at)


def _decode(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _tag(raw: bytes) -> TagRecord:
    value = _decode(raw)
    return TagRecord(
        str(value["digest"]),
        str(value["upstream"]),
        float(value["fetched_at"]),
        float(value.get("used_at", 0.0)),
    )


def _content(raw: bytes) -> ContentRecord:
    value = _decode(raw)
    return ContentRecord(
        str(value["upstream"]),
        str(value["repository"]),
        str(value["kind"]),
        int(value["size"]),
        float(value["fetched_at"]),
        float(value.get("used_at", 0.0)),
    )


_UNREADABLE = (PathNotFoundError, ValueError, KeyError, TypeError)


class CacheRecords:
    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver

    # -- tags ---------------------------------------------------------------------------

    async def tag(self, name: str, tag: str) -> TagRecord | None:
        try:
            return _tag(await self.driver.get_content(paths.proxy_tag(name, tag)))
        except _UNREADABLE:
            # Missing or unreadable: the tag is revalidated, which writes it afresh.
            return None

    async def put_tag(self, name: str, tag: str, record: TagRecord) -> None:
        await self.driver.put_content(
            paths.proxy_tag(name, tag), json.dumps(asdict(record)).encode()
        )

    async def forget_tag(self, name: str, tag: str) -> None:
        try:
            await self.driver.delete(paths.proxy_tag(name, tag))
        except PathNotFoundError:
            pass

    async def forget_repository(self, name: str) -> None:
        """Every tag record of a repository."""
        try:
            await self.driver.delete(f"{TAGS_ROOT}/{name}/{TAGS}")
        except PathNotFoundError:
            pass

    async def tags(self) -> AsyncIterator[tuple[str, str, TagRecord]]:
        """Every tag record: (repository, tag, record); unreadable ones are skipped."""
        pending = [""]
        while pending:
            prefix = pending.pop()
            base = f"{TAGS_ROOT}/{prefix}" if prefix else TAGS_ROOT
            for child in sorted(await self.driver.list(base)):
                if child == TAGS and prefix:
                    for tag in sorted(await self.driver.list(f"{base}/{TAGS}")):
                        record = await self.tag(prefix, tag)
                        if record is not None:
                            yield prefix, tag, record
                elif child[:1] != "_":
                    pending.append(f"{prefix}/{child}" if prefix else child)

    # -- content ------------------------------------------------------------------------

    async def filled(self, digest: Digest, record: ContentRecord) -> None:
        await self.driver.put_content(
            paths.proxy_content(digest), json.dumps(asdict(record)).encode()
        )

    async def content(self, digest: Digest) -> ContentRecord | None:
        try:
            return _content(await self.driver.get_content(paths.proxy_content(digest)))
        except _UNREADABLE:
            return None

    async def forget_content(self, digest: Digest) -> None:
        try:
            await self.driver.delete(paths.proxy_content(digest))
        except PathNotFoundError:
            pass

    async def contents(self) -> AsyncIterator[tuple[Digest, ContentRecord]]:
        """Every content record; unreadable ones are skipped (and left for a fill to rewrite)."""
        for algorithm in sorted(await self.driver.list(CONTENT_ROOT)):
            base = f"{CONTENT_ROOT}/{algorithm}"
            for prefix in sorted(await self.driver.list(base)):
                for hex_part in sorted(await self.driver.list(f"{base}/{prefix}")):
                    try:
                        digest = Digest.parse(f"{algorithm}:{hex_part}")
                    except OCIError:
                        continue
                    record = await self.content(digest)
                    if record is not None:
                        yield digest, record

    # -- last use -----------------------------------------------------------------------

    async def used(self, contents: dict[Digest, float], tags: dict[tuple[str, str], float]) -> None:
        """Record pulls: a record that is gone (evicted meanwhile) stays gone."""
        for digest, when in contents.items():
            record = await self.content(digest)
            if record is not None and when > record.used_at:
                await self.filled(digest, replace(record, used_at=when))
        for (name, tag), when in tags.items():
            tag_record = await self.tag(name, tag)
            if tag_record is not None and when > tag_record.used_at:
                await self.put_tag(name, tag, replace(tag_record, used_at=when))
