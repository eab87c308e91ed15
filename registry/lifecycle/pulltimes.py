"""When manifests and tags were last pulled, recorded without a storage write per pull.

Pulls are noted in memory and written out every `lifecycle.pull_flush_interval` seconds: at
most one write per pulled manifest per interval (one small JSON file per manifest, merged with
what other replicas wrote, the newest time winning). A crash loses the pulls of the last
interval at most; a clean stop writes them out first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field

from registry.reference import Digest
from registry.storage import paths
from registry.storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("nimbus.registry.lifecycle")


@dataclass(slots=True)
class PullRecord:
    # Last pull of the manifest by any reference (tag or digest).
    at: float = 0.0
    # Last pull through each tag.
    tags: dict[str, float] = field(default_factory=dict)

    def merge(self, other: PullRecord) -> None:
        self.at = max(self.at, other.at)
        for tag, when in other.tags.items():
            self.tags[tag] = max(self.tags.get(tag, 0.0), when)

    def to_bytes(self) -> bytes:
        return json.dumps({"at": self.at, "tags": self.tags}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PullRecord:
        raw = json.loads(data)
        return cls(float(raw.get("at", 0.0)), {str(k): float(v) for k, v in raw["tags"].items()})


class PullTimes:
    def __init__(self, driver: StorageDriver, interval: float = 60.0) -> None:
        self.driver = driver
        self.interval = interval
        self._pending: dict[tuple[str, str], PullRecord] = {}
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    def record(self, name: str, digest: Digest, tag: str, when: float | None = None) -> None:
        now = time.time() if when is None else when
        entry = self._pending.get((name, str(digest)))
        if entry is None:
            entry = self._pending[(name, str(digest))] = PullRecord()
        entry.at = max(entry.at, now)
        if tag:
            entry.tags[tag] = max(entry.tags.get(tag, 0.0), now)

    async def _stored(self, name: str, digest: Digest) -> PullRecord | None:
        try:
            return PullRecord.from_bytes(
                await self.driver.get_content(paths.pull_record(name, digest))
            )
        except PathNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None

    async def get(self, name: str, digest: Digest) -> PullRecord:
        """What storage holds, with this process's pulls not yet written."""
        record = await self._stored(name, digest) or PullRecord()
        pending = self._pending.get((name, str(digest)))
        if pending is not None:
            record.merge(pending)
        return record

    async def tag_pulled(self, name: str, digest: Digest, tag: str) -> float:
        """When ``digest`` was last pulled through ``tag`` (0: never)."""
        return (await self.get(name, digest)).tags.get(tag, 0.0)

    async def flush(self) -> int:
        """Write out the pulls noted since the last flush: one write per manifest."""
        pending, self._pending = self._pending, {}
        written = 0
        for (name, raw), record in pending.items():
            digest = Digest.parse(raw)
            try:
                stored = await self._stored(name, digest)
                if stored is not None:
                    record.merge(stored)
                await self.driver.put_content(paths.pull_record(name, digest), record.to_bytes())
                written += 1
            except OSError as error:
                # Kept for the next flush.
                log.warning("pull times not written", extra={"error": str(error)})
                self.record(name, digest, "", record.at)
                for tag, when in record.tags.items():
                    self.record(name, digest, tag, when)
        self.writes += written
        return written

    async def forget(self, name: str, digest: Digest) -> None:
        self._pending.pop((name, str(digest)), None)
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.pull_record(name, digest))

    def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
