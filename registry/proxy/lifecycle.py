"""The cache's lifecycle: a size bound with least-recently-used eviction, idle tags, purges.

Only content the cache filled (it has a content record) is ever evicted; pushed content has no
record, and filled content that a local repository (one no upstream serves) links as well counts
as pushed from then on (its record goes, so it neither counts nor is evicted). Evicting removes
the links of every cached repository first (tags pointing at a manifest, its revision, its
referrer entry, layer links), then the data, then the record, so a pull meanwhile finds it
missing and fills it again, and garbage collection never finds a revision without its data.

A sweep also drops records whose content is gone (removed by garbage collection or by hand)
and tag records whose tag is gone. Evictions emit no events: the upstream still has it all.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nimbus.oci.documents import InvalidManifestError, read_manifest
from registry.errors import ErrorCode, OCIError
from registry.proxy.records import CacheRecords, ContentRecord
from registry.proxy.upstreams import Router
from registry.reference import Digest
from registry.services.manifests import ManifestService
from registry.storage import paths, walk
from registry.storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("nimbus.registry.proxy")


@dataclass
class SweepReport:
    """What one sweep or purge did; `cached_bytes` is what stays counted afterwards."""

    blobs_evicted: int = 0
    manifests_evicted: int = 0
    tags_removed: int = 0
    bytes_freed: int = 0
    cached_bytes: int = 0
    cached_items: int = 0
    records_dropped: int = 0
    # Digests removed, oldest use first.
    evicted: list[str] = field(default_factory=list)


@dataclass
class _Links:
    """Where each digest is linked: cached repositories (to unlink) and whether a local one is."""

    layers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    revisions: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    local: set[str] = field(default_factory=set)


class CacheLifecycle:
    def __init__(
        self,
        driver: StorageDriver,
        manifests: ManifestService,
        router: Router,
        records: CacheRecords,
        max_bytes: int = 0,
        tag_max_idle: float = 0.0,
    ) -> None:
        self.driver = driver
        self.manifests = manifests
        self.router = router
        self.records = records
        self.max_bytes = max_bytes
        self.tag_max_idle = tag_max_idle

    def cached(self, name: str) -> bool:
        """Whether a stored repository is a cache (an upstream serves its name)."""
        return self.router.route(name) is not None

    # -- the sweep ----------------------------------------------------------------------

    async def sweep(self, now: float | None = None) -> SweepReport:
        now = time.time() if now is None else now
        report = SweepReport()
        await self._tags(report, now)
        records = [item async for item in self.records.contents()]
        live: list[tuple[Digest, ContentRecord]] = []
        for digest, record in records:
            if await self.driver.stat(paths.blob_data(digest)) is None:
                await self.records.forget_content(digest)
                report.records_dropped += 1
            else:
                live.append((digest, record))
        total = sum(r.size for _, r in live)
        if self.max_bytes and total > self.max_bytes:
            links = await self._links()
            live.sort(key=lambda item: item[1].last_use)
            kept: list[tuple[Digest, ContentRecord]] = []
            for digest, record in live:
                if total <= self.max_bytes:
                    kept.append((digest, record))
                    continue
                if str(digest) in links.local:
                    # Pushed as well: no longer the cache's to evict or count.
                    await self.records.forget_content(digest)
                    report.records_dropped += 1
                else:
                    await self._evict(digest, record, links, report)
                total -= record.size
            live = kept
        report.cached_items = len(live)
        report.cached_bytes = sum(r.size for _, r in live)
        if report.evicted or report.tags_removed:
            log.info(
                "cache sweep",
                extra={
                    "blobs_evicted": report.blobs_evicted,
                    "manifests_evicted": report.manifests_evicted,
                    "tags_removed": report.tags_removed,
                    "bytes_freed": report.bytes_freed,
                    "cached_bytes": report.cached_bytes,
                },
            )
        return report

    async def _tags(self, report: SweepReport, now: float) -> None:
        """Idle tags go (their content ages out); records of tags that are gone go too."""
        async for name, tag, record in self.records.tags():
            gone = await self.driver.stat(paths.tag_link(name, tag)) is None
            idle = bool(self.tag_max_idle) and now - record.last_use > self.tag_max_idle
            if not gone and not idle:
                continue
            if idle and not gone and self.cached(name):
                await self._remove_tag(name, tag, Digest.parse(record.digest))
                report.tags_removed += 1
            await self.records.forget_tag(name, tag)

    async def _remove_tag(self, name: str, tag: str, digest: Digest) -> None:
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.tag_dir(name, tag))
        self.manifests.forget(name, digest)

    async def _links(self) -> _Links:
        links = _Links()
        for name in await walk.repositories(self.driver):
            layers = await walk.layers(self.driver, name)
            revisions = await walk.revisions(self.driver, name)
            if not self.cached(name):
                links.local.update(str(d) for d in (*layers, *revisions))
                continue
            for digest in layers:
                links.layers[str(digest)].append(name)
            for digest in revisions:
                links.revisions[str(digest)].append(name)
        return links

    async def _evict(
        self, digest: Digest, record: ContentRecord, links: _Links, report: SweepReport
    ) -> None:
        key = str(digest)
        subject = await self._subject(digest) if links.revisions.get(key) else None
        for name in links.revisions.pop(key, []):
            await self._unlink_manifest(name, digest, subject)
        for name in links.layers.pop(key, []):
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(paths.layer_link(name, digest).rsplit("/", 1)[0])
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.blob_data(digest).rsplit("/", 1)[0])
        await self.records.forget_content(digest)
        if record.kind == "manifest":
            report.manifests_evicted += 1
        else:
            report.blobs_evicted += 1
        report.bytes_freed += record.size
        report.evicted.append(key)

    async def _subject(self, digest: Digest) -> Digest | None:
        try:
            document = read_manifest(await self.driver.get_content(paths.blob_data(digest)))
        except (PathNotFoundError, InvalidManifestError):
            return None
        if document.subject is None:
            return None
        try:
            return Digest.parse(document.subject.digest)
        except OCIError:
            return None

    async def _unlink_manifest(self, name: str, digest: Digest, subject: Digest | None) -> None:
        """A cached repository forgets a manifest: tags on it, the revision, its referrer entry."""
        for tag in await self.manifests.tags_of(name, digest):
            await self._remove_tag(name, tag, digest)
            await self.records.forget_tag(name, tag)
        if subject is not None:
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(paths.referrer_entry(name, subject, digest))
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.revision_link(name, digest).rsplit("/", 1)[0])
        self.manifests.forget(name, digest)

    # -- purges -------------------------------------------------------------------------

    async def purge(self, name: str, tag: str = "") -> SweepReport:
        """Forget a cached repository (every tag, manifest and layer link), or one tag of it.

        Content that no other repository links goes with the repository; a purged tag's
        manifest stays until eviction or garbage collection takes it.
        """
        if not self.cached(name):
            raise OCIError(
                ErrorCode.DENIED, f"{name} is no cached repository: no upstream serves it"
            )
        report = SweepReport()
        if tag:
            record = await self.records.tag(name, tag)
            try:
                raw = await self.driver.get_content(paths.tag_link(name, tag))
            except PathNotFoundError:
                raw = b""
            if not raw and record is None:
                raise OCIError(ErrorCode.MANIFEST_UNKNOWN, f"{name}:{tag} is not cached")
            target = raw.decode().strip() or (record.digest if record else "")
            await self._remove_tag(name, tag, Digest.parse(target))
            await self.records.forget_tag(name, tag)
            report.tags_removed = 1
            return report
        if not await self.driver.list(paths.repository(name)):
            raise OCIError(ErrorCode.NAME_UNKNOWN, f"{name} is not cached")
        links = await self._links()
        mine = {
            *(d for d, names in links.layers.items() if name in names),
            *(d for d, names in links.revisions.items() if name in names),
        }
        report.tags_removed = len(await walk.tags(self.driver, name))
        for key in sorted(mine):
            shared = key in links.local or any(
                other != name for other in (*links.layers[key], *links.revisions[key])
            )
            content = await self.records.content(Digest.parse(key))
            if shared or content is None:
                continue
            await self._evict(Digest.parse(key), content, links, report)
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.repository(name))
        await self.records.forget_repository(name)
        for key in mine:
            self.manifests.forget(name, Digest.parse(key))
        return report


class SweepLock:
    """At most one worker of a registry sweeps at a time: a non-blocking `flock`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
