"""When cached content and tags were last pulled, kept in memory and written in batches.

A pull notes its digest (and tag) here, in memory; every `usage_flush_interval` seconds (and
when the registry stops) the notes go into the cache's records, one write per item pulled since
the last flush rather than one per pull. A crash loses the notes since the last flush: those
items look as old as their previous flush to eviction, so they may go a little early.
"""

from __future__ import annotations

import logging
import time

from registry.proxy.records import CacheRecords
from registry.reference import Digest

log = logging.getLogger("nimbus.registry.proxy")


class UsageLog:
    def __init__(self, records: CacheRecords) -> None:
        self.records = records
        self._contents: dict[Digest, float] = {}
        self._tags: dict[tuple[str, str], float] = {}

    def content(self, digest: Digest, when: float | None = None) -> None:
        self._contents[digest] = when if when is not None else time.time()

    def tag(self, name: str, tag: str, when: float | None = None) -> None:
        self._tags[(name, tag)] = when if when is not None else time.time()

    @property
    def pending(self) -> int:
        return len(self._contents) + len(self._tags)

    async def flush(self) -> None:
        contents, self._contents = self._contents, {}
        tags, self._tags = self._tags, {}
        if not contents and not tags:
            return
        try:
            await self.records.used(contents, tags)
        except Exception:
            # Kept for the next flush (newer notes win).
            for digest, when in contents.items():
                self._contents.setdefault(digest, when)
            for key, when in tags.items():
                self._tags.setdefault(key, when)
            log.exception("cannot record the cache's last use; kept for the next flush")
