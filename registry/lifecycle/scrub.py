"""Integrity scrub: re-hash every stored blob at a bounded rate, find what manifests miss.

Blobs (manifests are stored as blobs too) are read back through the storage driver, which
knows nothing of OCI, and hashed with their digest's algorithm at `rate` bytes per second. A
blob whose bytes no longer hash to its digest is corrupt: a run (not a dry run) moves it aside
to `_lifecycle/quarantine/<alg>-<hex>`, so it is no longer served (a GET answers 404
BLOB_UNKNOWN, as for any absent blob) and the next push of that digest stores it afresh. Then
every manifest of every repository is checked for the blobs it needs: its own, its config's
and layers', its children's; one absent is reported missing. Nothing here is an event: the
scrub moves files, it pushes and deletes nothing through the services.

Races: a blob is quarantined only when its size and modification time are still those it had
when hashed, so a copy put back or re-pushed meanwhile stays. What is absent is looked at a
second time before it is reported, since a garbage collection sets blobs aside while it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from enum import IntEnum

from nimbus.oci.documents import read_manifest
from registry.lifecycle.lease import Lease, LeaseHeld
from registry.lifecycle.ratelimit import ByteRate, TickFigures
from registry.reference import Digest
from registry.services.repositories import RepositoryService
from registry.storage import paths, walk
from registry.storage.driver import FileInfo, PathNotFoundError, StorageDriver

log = logging.getLogger("nimbus.registry.scrub")

__all__ = ["LeaseHeld", "ScrubService", "quarantine_path"]

QUARANTINE = f"{paths.LIFECYCLE}/quarantine"
# A progress message every this many blobs, so a long run shows it goes on.
_PROGRESS_EVERY = 500


def quarantine_path(digest: Digest) -> str:
    """Where a corrupt blob's bytes are kept, out of reach of pulls, for a look by hand."""
    return f"{QUARANTINE}/{digest.algorithm}-{digest.hex}"


class Phase(IntEnum):
    """Values match ScrubProgress.Phase in proto/nimbus/v1/registry.proto."""

    HASH_BLOBS = 1
    CHECK_MANIFESTS = 2
    DONE = 3


class ItemKind(IntEnum):
    """Values match ScrubItem.Kind."""

    CORRUPT = 1
    MISSING = 2


@dataclass(frozen=True, slots=True)
class ScrubItem:
    kind: ItemKind
    digest: str
    # Corrupt: the digest its bytes have now.
    actual: str = ""
    # Missing: the repository and manifest that need it.
    repository: str = ""
    manifest: str = ""
    size: int = 0
    quarantined: bool = False

    def describe(self) -> str:
        if self.kind == ItemKind.CORRUPT:
            return f"corrupt blob {self.digest} (its {self.size} bytes hash to {self.actual})"
        return f"missing blob {self.digest} needed by {self.repository}@{self.manifest}"


@dataclass(frozen=True, slots=True)
class ScrubStats:
    blobs_checked: int = 0
    bytes_hashed: int = 0
    corrupt: int = 0
    quarantined: int = 0
    manifests_checked: int = 0
    missing: int = 0
    # The rate the run read at (0: no limit) and what it spent per tick of the limiter.
    rate: int = 0
    ticks: TickFigures | None = None
    started: float = 0.0
    finished: float = 0.0


@dataclass(frozen=True, slots=True)
class ScrubProgress:
    phase: Phase
    message: str
    stats: ScrubStats
    dry_run: bool
    item: ScrubItem | None = None


class ScrubService:
    def __init__(
        self,
        driver: StorageDriver,
        repositories: RepositoryService,
        rate: int = 0,
        lease_ttl: float = 60.0,
        tick: float = 0.25,
    ) -> None:
        self.driver = driver
        self.repositories = repositories
        self.rate = rate
        self.tick = tick
        self.lease = Lease(driver, "scrub", lease_ttl)
        self.last: ScrubStats | None = None

    async def run(self, dry_run: bool, rate: int | None = None) -> AsyncIterator[ScrubProgress]:
        """Hash, quarantine (unless ``dry_run``) and check: one run at a time across replicas."""
        async with self.lease.hold():
            async for progress in self._run(dry_run, self.rate if rate is None else rate):
                yield progress

    async def run_detached(
        self, dry_run: bool, rate: int | None = None
    ) -> AsyncIterator[ScrubProgress]:
        """As `run`, but a caller that goes away does not stop the run half-way."""
        queue: asyncio.Queue[ScrubProgress | BaseException | None] = asyncio.Queue()

        async def drive() -> None:
            try:
                async for progress in self.run(dry_run, rate):
                    queue.put_nowait(progress)
            except BaseException as error:  # handed to the caller
                queue.put_nowait(error)
                return
            queue.put_nowait(None)

        task = asyncio.create_task(drive())
        # Whatever happens to the caller, the run's outcome is collected (and logged there).
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        while True:
            got = await queue.get()
            if got is None:
                await task
                return
            if isinstance(got, BaseException):
                raise got
            yield got

    # -- hashing --------------------------------------------------------------------------

    async def _hash(self, digest: Digest, size: int, limiter: ByteRate) -> str | None:
        """The digest the stored bytes have now; None when the blob went meanwhile."""
        hasher = hashlib.new(digest.algorithm)
        path = paths.blob_data(digest)
        offset = 0
        try:
            while offset < size:
                piece = min(limiter.piece, size - offset)
                await limiter.spend(piece)
                got = await self.driver.update_hash(path, hasher, offset, piece)
                if got == 0:
                    break  # shorter than it said: the hash tells
                offset += got
        except PathNotFoundError:
            return None
        return f"{digest.algorithm}:{hasher.hexdigest()}"

    async def _quarantine(self, digest: Digest, hashed: FileInfo) -> bool:
        now = await self.driver.stat(paths.blob_data(digest))
        if now is None or (now.size, now.modified_ns) != (hashed.size, hashed.modified_ns):
            return False  # replaced since it was read: the new copy is looked at next time
        try:
            await self.driver.move(paths.blob_data(digest), quarantine_path(digest))
        except PathNotFoundError:
            return False
        log.warning("corrupt blob quarantined", extra={"digest": str(digest)})
        return True

    async def _hash_blobs(
        self, dry_run: bool, limiter: ByteRate, stats: ScrubStats, bad: set[str]
    ) -> AsyncIterator[ScrubProgress]:
        async for digest in walk.blobs(self.driver):
            info = await self.driver.stat(paths.blob_data(digest))
            if info is None or info.is_dir:
                continue  # a directory left by a collection or a quarantine
            actual = await self._hash(digest, info.size, limiter)
            if actual is None:
                continue
            stats = replace(
                stats,
                blobs_checked=stats.blobs_checked + 1,
                bytes_hashed=stats.bytes_hashed + info.size,
                ticks=limiter.figures(),
            )
            if actual == str(digest):
                if stats.blobs_checked % _PROGRESS_EVERY == 0:
                    yield ScrubProgress(
                        Phase.HASH_BLOBS,
                        f"hashed {stats.blobs_checked} blobs ({stats.bytes_hashed} bytes) so far",
                        stats,
                        dry_run,
                    )
                continue
            bad.add(str(digest))
            quarantined = not dry_run and await self._quarantine(digest, info)
            stats = replace(
                stats,
                corrupt=stats.corrupt + 1,
                quarantined=stats.quarantined + int(quarantined),
            )
            item = ScrubItem(
                ItemKind.CORRUPT, str(digest), actual, size=info.size, quarantined=quarantined
            )
            verb = "quarantined" if quarantined else "found"
            yield ScrubProgress(Phase.HASH_BLOBS, f"{verb} {item.describe()}", stats, dry_run, item)
        yield ScrubProgress(
            Phase.HASH_BLOBS,
            f"hashed {stats.blobs_checked} blobs ({stats.bytes_hashed} bytes): "
            f"{stats.corrupt} corrupt",
            stats,
            dry_run,
        )

    # -- manifests ------------------------------------------------------------------------

    async def _absent(self, digest: Digest) -> bool:
        return await self.driver.stat(paths.blob_data(digest)) is None

    async def _needs(self, name: str, manifest: Digest) -> list[str]:
        """Digests a stored manifest needs (itself first); [] when it went meanwhile."""
        try:
            data = await self.driver.get_content(paths.blob_data(manifest))
        except PathNotFoundError:
            return [str(manifest)]
        try:
            document = read_manifest(data)
        except ValueError:
            return []  # not readable as a manifest: its hash was checked above
        return [str(manifest), *(d.digest for d in document.distributable_blobs())] + [
            d.digest for d in document.manifests if d.digest
        ]

    async def _check_manifests(
        self, dry_run: bool, stats: ScrubStats, bad: set[str]
    ) -> AsyncIterator[ScrubProgress]:
        for name in await self.repositories.all_repositories():
            for manifest in await walk.revisions(self.driver, name):
                if await self.driver.stat(paths.revision_link(name, manifest)) is None:
                    continue
                stats = replace(stats, manifests_checked=stats.manifests_checked + 1)
                for needed in await self._needs(name, manifest):
                    try:
                        digest = Digest.parse(needed)
                    except Exception:
                        continue
                    if not await self._absent(digest):
                        continue
                    # A collection may have it set aside for a moment: look again.
                    await asyncio.sleep(0.2)
                    if not await self._absent(digest):
                        continue
                    if await self.driver.stat(paths.revision_link(name, manifest)) is None:
                        break  # the manifest itself was deleted meanwhile
                    quarantined = needed in bad or (
                        await self.driver.stat(quarantine_path(digest)) is not None
                    )
                    stats = replace(stats, missing=stats.missing + 1)
                    item = ScrubItem(
                        ItemKind.MISSING,
                        needed,
                        repository=name,
                        manifest=str(manifest),
                        quarantined=quarantined,
                    )
                    note = " (quarantined)" if quarantined else ""
                    yield ScrubProgress(
                        Phase.CHECK_MANIFESTS, item.describe() + note, stats, dry_run, item
                    )
        yield ScrubProgress(
            Phase.CHECK_MANIFESTS,
            f"checked {stats.manifests_checked} manifests: {stats.missing} blobs missing",
            stats,
            dry_run,
        )

    async def _run(self, dry_run: bool, rate: int) -> AsyncIterator[ScrubProgress]:
        stats = ScrubStats(rate=rate, started=time.time())
        limiter = ByteRate(rate, self.tick)
        bad: set[str] = set()
        async for progress in self._hash_blobs(dry_run, limiter, stats, bad):
            stats = progress.stats
            yield progress
        async for progress in self._check_manifests(dry_run, stats, bad):
            stats = progress.stats
            yield progress
        stats = replace(stats, ticks=limiter.figures(), finished=time.time())
        if not dry_run:
            self.last = stats
        verb = "would quarantine" if dry_run else "quarantined"
        yield ScrubProgress(
            Phase.DONE,
            f"{stats.blobs_checked} blobs hashed ({stats.bytes_hashed} bytes), "
            f"{stats.corrupt} corrupt ({verb} {stats.corrupt if dry_run else stats.quarantined}), "
            f"{stats.manifests_checked} manifests checked, {stats.missing} blobs missing",
            stats,
            dry_run,
        )

    # -- schedule -------------------------------------------------------------------------

    async def run_scheduled(self) -> None:
        """One scheduled run; a replica finding the lease held leaves the turn to it."""
        try:
            async for progress in self.run(dry_run=False):
                if progress.phase == Phase.DONE:
                    log.info("scheduled scrub run", extra={"summary": progress.message})
        except LeaseHeld:
            return
        except Exception as error:
            log.warning("scheduled scrub run failed", extra={"error": str(error)})
