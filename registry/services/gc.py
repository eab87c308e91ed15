"""Garbage collection: mark every blob a manifest references, sweep the rest, while pushes go on.

Mark: every manifest revision of every repository marks itself, its config, its layers and the
manifests it lists. Sweep: a blob that nothing marked is removed only when it is older than the
grace period, both its data and every repository link to it, so content a push has uploaded but
not yet referenced from a manifest is never taken.

Removal is two-step so that an upload finishing at the same moment cannot lose its blob: the
data is first set aside (an atomic move into `_gc/trash/<run>`), then the repositories are looked
at again, and a blob that was linked or referenced by a manifest meanwhile is put back.
Uploads link their blob before they check whether its data exists, so either the upload sees
the data gone and moves its own copy in, or this second look sees the fresh link.

Optionally manifests no tag reaches (directly, through an index or as a referrer of a reachable
manifest) are removed first, as Distribution's `--delete-untagged` does; then upload sessions
idle for longer than their maximum age.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from enum import IntEnum

from registry.errors import OCIError
from registry.reference import Digest
from registry.services.inventory import list_revisions, walk_blobs
from registry.services.manifests import ManifestService
from registry.services.repositories import RepositoryService
from registry.storage import paths
from registry.storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("nimbus.registry.gc")

DEFAULT_GRACE_SECONDS = 3600.0
DEFAULT_UPLOAD_MAX_AGE_SECONDS = 24 * 3600.0
# A progress message at least this often during long phases.
PROGRESS_INTERVAL = 0.5


class Phase(IntEnum):
    """Values match GarbageCollectProgress.Phase in proto/nimbus/v1/registry.proto."""

    MARK = 1
    SWEEP_MANIFESTS = 2
    SWEEP_BLOBS = 3
    SWEEP_UPLOADS = 4
    DONE = 5


class ItemKind(IntEnum):
    """Values match GarbageCollectItem.Kind."""

    BLOB = 1
    MANIFEST = 2
    UPLOAD = 3


class CollectionRunning(Exception):
    """A garbage collection is already running in this process."""


class CollectionAborted(Exception):
    """Something made it unsafe to sweep (e.g. an unreadable manifest): nothing was removed."""


@dataclass(frozen=True)
class GcOptions:
    dry_run: bool = False
    delete_untagged: bool = False
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    upload_max_age_seconds: float = DEFAULT_UPLOAD_MAX_AGE_SECONDS


@dataclass(frozen=True)
class GcItem:
    kind: ItemKind
    digest: str = ""
    repository: str = ""
    upload_id: str = ""
    size: int = 0


@dataclass
class GcStats:
    repositories: int = 0
    manifests_marked: int = 0
    blobs_marked: int = 0
    blobs_scanned: int = 0
    blobs_kept_recent: int = 0
    blobs_deleted: int = 0
    bytes_freed: int = 0
    manifests_deleted: int = 0
    uploads_deleted: int = 0
    started: float = 0.0  # epoch seconds
    finished: float = 0.0


@dataclass(frozen=True)
class GcProgress:
    phase: Phase
    message: str
    stats: GcStats
    dry_run: bool
    item: GcItem | None = None


@dataclass
class _Run:
    options: GcOptions
    run_id: str
    started: float
    stats: GcStats
    # Blob digests referenced by some manifest.
    marked: set[str] = field(default_factory=set)
    # (repository, manifest digest) already read, so a second look reads only new ones.
    seen: set[tuple[str, str]] = field(default_factory=set)
    # Manifests removed as untagged in this run: their revisions no longer count.
    removed: set[tuple[str, str]] = field(default_factory=set)

    @property
    def cutoff_ns(self) -> int:
        return int((self.started - self.options.grace_seconds) * 1e9)

    @property
    def upload_cutoff_ns(self) -> int:
        return int((self.started - self.options.upload_max_age_seconds) * 1e9)

    def progress(self, phase: Phase, message: str, item: GcItem | None = None) -> GcProgress:
        return GcProgress(phase, message, replace(self.stats), self.options.dry_run, item)


def _references(data: bytes) -> list[str]:
    """Digests a manifest needs: config, layers and the manifests an index lists."""
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("manifest is not a JSON object")
    found: list[str] = []
    config = doc.get("config")
    if isinstance(config, dict) and isinstance(config.get("digest"), str):
        found.append(config["digest"])
    for key in ("layers", "manifests", "blobs"):
        entries = doc.get(key)
        if isinstance(entries, list):
            found.extend(
                e["digest"]
                for e in entries
                if isinstance(e, dict) and isinstance(e.get("digest"), str)
            )
    return found


class GarbageCollector:
    def __init__(
        self,
        driver: StorageDriver,
        repositories: RepositoryService,
        manifests: ManifestService,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        upload_max_age_seconds: float = DEFAULT_UPLOAD_MAX_AGE_SECONDS,
    ) -> None:
        self.driver = driver
        self.repositories = repositories
        self.manifests = manifests
        self.defaults = GcOptions(
            grace_seconds=grace_seconds, upload_max_age_seconds=upload_max_age_seconds
        )
        self.last: GcStats | None = None
        self._lock = asyncio.Lock()
        self._detached: set[asyncio.Task[None]] = set()

    def options(
        self,
        dry_run: bool = False,
        delete_untagged: bool = False,
        grace_seconds: float | None = None,
        upload_max_age_seconds: float | None = None,
    ) -> GcOptions:
        """Options for one run: the configured defaults unless given."""
        return GcOptions(
            dry_run=dry_run,
            delete_untagged=delete_untagged,
            grace_seconds=self.defaults.grace_seconds if grace_seconds is None else grace_seconds,
            upload_max_age_seconds=(
                self.defaults.upload_max_age_seconds
                if upload_max_age_seconds is None
                else upload_max_age_seconds
            ),
        )

    async def run_detached(self, options: GcOptions) -> AsyncIterator[GcProgress]:
        """Like `run`, but the collection finishes even when the caller stops listening."""
        if self._lock.locked():
            raise CollectionRunning("a garbage collection is already running")
        queue: asyncio.Queue[GcProgress | BaseException | None] = asyncio.Queue()

        async def collect() -> None:
            try:
                async for progress in self.run(options):
                    queue.put_nowait(progress)
            except Exception as exc:
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(collect())
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
        while (message := await queue.get()) is not None:
            if isinstance(message, BaseException):
                raise message
            yield message

    async def run(self, options: GcOptions) -> AsyncIterator[GcProgress]:
        """Collect, yielding progress; the last message has phase DONE."""
        if self._lock.locked():
            raise CollectionRunning("a garbage collection is already running")
        async with self._lock:
            started = time.time()
            run = _Run(options, uuid.uuid4().hex, started, GcStats(started=started))
            log.info("garbage collection started", extra={"run": run.run_id, **vars(options)})
            await self._restore_leftovers()
            async for progress in self._mark(run):
                yield progress
            async for progress in self._sweep_blobs(run):
                yield progress
            async for progress in self._sweep_uploads(run):
                yield progress
            run.stats.finished = time.time()
            if not options.dry_run:
                self.last = replace(run.stats)
            verb = "would free" if options.dry_run else "freed"
            summary = (
                f"{verb} {run.stats.bytes_freed} bytes: {run.stats.blobs_deleted} blobs, "
                f"{run.stats.manifests_deleted} manifests, {run.stats.uploads_deleted} uploads"
            )
            log.info("garbage collection finished", extra={"run": run.run_id, **vars(run.stats)})
            yield run.progress(Phase.DONE, summary)

    # -- mark ---------------------------------------------------------------------------

    async def _mark(self, run: _Run) -> AsyncIterator[GcProgress]:
        yield run.progress(Phase.MARK, "marking blobs referenced by manifests")
        names = await self.repositories.all_repositories()
        last = time.monotonic()
        for name in names:
            if run.options.delete_untagged:
                async for progress in self._remove_untagged(run, name):
                    yield progress
            await self._mark_repository(run, name)
            run.stats.repositories += 1
            if time.monotonic() - last >= PROGRESS_INTERVAL:
                last = time.monotonic()
                yield run.progress(Phase.MARK, self._mark_message(run, len(names)))
        yield run.progress(Phase.MARK, self._mark_message(run, len(names)))

    @staticmethod
    def _mark_message(run: _Run, total: int) -> str:
        return (
            f"marked {run.stats.blobs_marked} blobs from {run.stats.manifests_marked} manifests "
            f"in {run.stats.repositories}/{total} repositories"
        )

    async def _mark_repository(self, run: _Run, name: str) -> None:
        """Mark what every manifest of `name` not read before references."""
        revisions = await list_revisions(self.driver, name)
        tagged = await self._tag_targets(name)
        for digest in [*revisions, *tagged]:
            key = (name, str(digest))
            if key in run.seen or key in run.removed:
                continue
            run.seen.add(key)
            await self._mark_manifest(run, name, digest)

    async def _mark_manifest(self, run: _Run, name: str, digest: Digest) -> None:
        self._mark_blob(run, str(digest))
        try:
            data = await self.driver.get_content(paths.blob_data(digest))
        except PathNotFoundError:
            # A revision without content references nothing that could still be served.
            log.warning(
                "manifest content missing", extra={"repository": name, "digest": str(digest)}
            )
            return
        try:
            references = _references(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CollectionAborted(
                f"cannot read manifest {digest} in {name} ({exc}); nothing was removed"
            ) from None
        run.stats.manifests_marked += 1
        for reference in references:
            self._mark_blob(run, reference)

    @staticmethod
    def _mark_blob(run: _Run, digest: str) -> None:
        if digest not in run.marked:
            run.marked.add(digest)
            run.stats.blobs_marked += 1

    async def _tag_targets(self, name: str) -> list[Digest]:
        found = []
        for tag in await self.driver.list(paths.tags_root(name)):
            try:
                raw = await self.driver.get_content(paths.tag_link(name, tag))
                found.append(Digest.parse(raw.decode().strip()))
            except (PathNotFoundError, OCIError, UnicodeDecodeError):
                continue
        return found

    # -- untagged manifests -------------------------------------------------------------

    async def _remove_untagged(self, run: _Run, name: str) -> AsyncIterator[GcProgress]:
        revisions = await list_revisions(self.driver, name)
        reachable = await self._reachable(name, await self._tag_targets(name))
        for digest in revisions:
            if str(digest) in reachable:
                continue
            link = await self.driver.stat(paths.revision_link(name, digest))
            # Index children are pushed before their index: young manifests are kept.
            if link is None or link.modified_ns >= run.cutoff_ns:
                continue
            info = await self.driver.stat(paths.blob_data(digest))
            if not run.options.dry_run:
                await self._remove_manifest(name, digest)
            run.removed.add((name, str(digest)))
            run.stats.manifests_deleted += 1
            item = GcItem(ItemKind.MANIFEST, str(digest), name, size=info.size if info else 0)
            verb = "would remove" if run.options.dry_run else "removed"
            yield run.progress(Phase.SWEEP_MANIFESTS, f"{verb} untagged {name}@{digest}", item)

    async def _reachable(self, name: str, roots: list[Digest]) -> set[str]:
        """Manifests reached from the tags: index children and referrers, transitively."""
        reachable: set[str] = set()
        pending = list(roots)
        while pending:
            digest = pending.pop()
            if str(digest) in reachable:
                continue
            reachable.add(str(digest))
            try:
                manifest = await self.manifests.load(digest)
                doc = json.loads(manifest.data)
            except (OCIError, ValueError):
                continue
            children = doc.get("manifests") if isinstance(doc, dict) else None
            for child in children if isinstance(children, list) else []:
                if isinstance(child, dict) and isinstance(child.get("digest"), str):
                    try:
                        pending.append(Digest.parse(child["digest"]))
                    except OCIError:
                        continue
            for referrer in await self.manifests.referrers(name, digest, None):
                try:
                    pending.append(Digest.parse(str(referrer.get("digest"))))
                except OCIError:
                    continue
        return reachable

    async def _remove_manifest(self, name: str, digest: Digest) -> None:
        """Forget a manifest revision (its blobs go in the blob sweep)."""
        try:
            data = await self.driver.get_content(paths.blob_data(digest))
            doc = json.loads(data)
            subject = doc.get("subject") if isinstance(doc, dict) else None
            if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
                entry = paths.referrer_entry(name, Digest.parse(subject["digest"]), digest)
                await self._delete_quietly(entry)
        except (PathNotFoundError, ValueError, OCIError):
            pass
        await self._delete_quietly(paths.revision_link(name, digest).rsplit("/", 1)[0])
        self.manifests.forget(name, digest)

    async def _delete_quietly(self, path: str) -> None:
        try:
            await self.driver.delete(path)
        except PathNotFoundError:
            pass

    # -- blobs --------------------------------------------------------------------------

    async def _sweep_blobs(self, run: _Run) -> AsyncIterator[GcProgress]:
        yield run.progress(Phase.SWEEP_BLOBS, "looking for unreferenced blobs")
        candidates: dict[str, tuple[Digest, int]] = {}
        async for digest in walk_blobs(self.driver):
            run.stats.blobs_scanned += 1
            if str(digest) in run.marked:
                continue
            info = await self.driver.stat(paths.blob_data(digest))
            if info is None:
                continue  # a directory left by an earlier sweep
            if info.modified_ns >= run.cutoff_ns:
                run.stats.blobs_kept_recent += 1
                continue
            candidates[str(digest)] = (digest, info.size)
        for key in await self._recently_linked(run, candidates):
            candidates.pop(key)
            run.stats.blobs_kept_recent += 1
        yield run.progress(
            Phase.SWEEP_BLOBS,
            f"{len(candidates)} unreferenced blobs of {run.stats.blobs_scanned} "
            f"({run.stats.blobs_kept_recent} younger than the grace period kept)",
        )
        if run.options.dry_run:
            for digest, size in candidates.values():
                run.stats.blobs_deleted += 1
                run.stats.bytes_freed += size
                item = GcItem(ItemKind.BLOB, str(digest), size=size)
                yield run.progress(Phase.SWEEP_BLOBS, f"would remove blob {digest}", item)
            return
        trashed = await self._set_aside(run, candidates)
        # The second look: anything linked or referenced since the first goes back.
        for name in await self.repositories.all_repositories():
            await self._mark_repository(run, name)
        relinked = await self._recently_linked(run, trashed)
        for key, (digest, size) in trashed.items():
            entry = paths.gc_trash_entry(run.run_id, digest)
            if key in run.marked or key in relinked:
                await self._put_back(entry, digest)
                run.stats.blobs_kept_recent += 1
                continue
            await self._delete_quietly(entry)
            run.stats.blobs_deleted += 1
            run.stats.bytes_freed += size
            yield run.progress(
                Phase.SWEEP_BLOBS,
                f"removed blob {digest}",
                GcItem(ItemKind.BLOB, str(digest), size=size),
            )
        await self._delete_quietly(paths.gc_trash_run(run.run_id))

    async def _recently_linked(
        self, run: _Run, candidates: dict[str, tuple[Digest, int]]
    ) -> set[str]:
        """Candidates some repository linked (upload or mount) after the cutoff."""
        recent: set[str] = set()
        if not candidates:
            return recent
        by_algorithm: dict[str, set[str]] = {}
        for digest, _ in candidates.values():
            by_algorithm.setdefault(digest.algorithm, set()).add(digest.hex)
        for name in await self._repository_dirs():
            for algorithm, wanted in by_algorithm.items():
                present = set(await self.driver.list(f"{paths.layers_root(name)}/{algorithm}"))
                for hex_part in present & wanted:
                    digest = Digest.parse(f"{algorithm}:{hex_part}")
                    info = await self.driver.stat(paths.layer_link(name, digest))
                    if info is not None and info.modified_ns >= run.cutoff_ns:
                        recent.add(str(digest))
        return recent

    async def _set_aside(
        self, run: _Run, candidates: dict[str, tuple[Digest, int]]
    ) -> dict[str, tuple[Digest, int]]:
        trashed: dict[str, tuple[Digest, int]] = {}
        for key, (digest, size) in candidates.items():
            try:
                await self.driver.move(
                    paths.blob_data(digest), paths.gc_trash_entry(run.run_id, digest)
                )
            except PathNotFoundError:
                continue
            trashed[key] = (digest, size)
        return trashed

    async def _put_back(self, entry: str, digest: Digest) -> None:
        try:
            # An upload may have moved its own copy in meanwhile: same bytes, either is right.
            await self.driver.move(entry, paths.blob_data(digest))
        except PathNotFoundError:
            pass

    async def _restore_leftovers(self) -> None:
        """Put back blobs an interrupted collection had set aside; this run decides again."""
        for run_id in await self.driver.list(paths.GC_TRASH):
            root = paths.gc_trash_run(run_id)
            for name in await self.driver.list(root):
                algorithm, _, hex_part = name.partition("-")
                try:
                    digest = Digest.parse(f"{algorithm}:{hex_part}")
                except OCIError:
                    continue
                await self._put_back(f"{root}/{name}", digest)
            await self._delete_quietly(root)

    async def _repository_dirs(self, with_uploads: bool = False) -> list[str]:
        """Every repository directory, including ones holding only upload sessions."""
        markers = {paths.LAYERS, paths.MANIFESTS, *([paths.UPLOADS] if with_uploads else [])}
        found: list[str] = []
        pending = [""]
        while pending:
            prefix = pending.pop()
            base = f"{paths.REPOSITORIES}/{prefix}" if prefix else paths.REPOSITORIES
            children = await self.driver.list(base)
            if prefix and markers & set(children):
                found.append(prefix)
            pending.extend(f"{prefix}/{c}" if prefix else c for c in children if c[:1] != "_")
        return sorted(found)

    # -- uploads ------------------------------------------------------------------------

    async def _sweep_uploads(self, run: _Run) -> AsyncIterator[GcProgress]:
        yield run.progress(Phase.SWEEP_UPLOADS, "looking for stale upload sessions")
        verb = "would remove" if run.options.dry_run else "removed"
        for name in await self._repository_dirs(with_uploads=True):
            for upload_id in sorted(await self.driver.list(paths.uploads_root(name))):
                started, data = await asyncio.gather(
                    self.driver.stat(paths.upload_started(name, upload_id)),
                    self.driver.stat(paths.upload_data(name, upload_id)),
                )
                directory = await self.driver.stat(paths.upload_dir(name, upload_id))
                # Last activity: a slow upload that keeps appending is not stale.
                touched = max(
                    (i.modified_ns for i in (started, data, directory) if i is not None),
                    default=0,
                )
                if touched >= run.upload_cutoff_ns:
                    continue
                if not run.options.dry_run:
                    await self._delete_quietly(paths.upload_dir(name, upload_id))
                run.stats.uploads_deleted += 1
                size = data.size if data else 0
                item = GcItem(ItemKind.UPLOAD, repository=name, upload_id=upload_id, size=size)
                yield run.progress(
                    Phase.SWEEP_UPLOADS, f"{verb} upload {upload_id} of {name}", item
                )
