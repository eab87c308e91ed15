"""What the cache keeps about its content, in the storage driver beside the content itself.

A tag's record says which digest the upstream gave for it and when (the clock of its
time-to-live); a content record says that a blob or manifest was filled from an upstream rather
than pushed, which later eviction needs. Small JSON files, written atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from registry.reference import Digest
from registry.storage import paths
from registry.storage.driver import PathNotFoundError, StorageDriver


@dataclass(frozen=True, slots=True)
class TagRecord:
    digest: str
    upstream: str
    # Unix time of the last fetch or revalidation that confirmed the digest.
    fetched_at: float

    def fresh(self, ttl: float, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) - self.fetched_at < ttl


@dataclass(frozen=True, slots=True)
class ContentRecord:
    upstream: str
    repository: str
    kind: str  # "blob" or "manifest"
    size: int
    fetched_at: float


class CacheRecords:
    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver

    async def tag(self, name: str, tag: str) -> TagRecord | None:
        try:
            raw = json.loads(await self.driver.get_content(paths.proxy_tag(name, tag)))
            return TagRecord(str(raw["digest"]), str(raw["upstream"]), float(raw["fetched_at"]))
        except (PathNotFoundError, ValueError, KeyError, TypeError):
            # Missing or unreadable: the tag is revalidated, which writes it afresh.
            return None

    async def put_tag(self, name: str, tag: str, record: TagRecord) -> None:
        await self.driver.put_content(
            paths.proxy_tag(name, tag), json.dumps(asdict(record)).encode()
        )

    async def filled(self, digest: Digest, record: ContentRecord) -> None:
        await self.driver.put_content(
            paths.proxy_content(digest), json.dumps(asdict(record)).encode()
        )
