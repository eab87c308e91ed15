"""Garbage collection: mark every blob a manifest references, sweep the rest, while pushes go on.

Mark, reading only: every manifest revision of every repository marks itself, its config, its
layers and the manifests it lists; with `delete_untagged`, the manifests no tag reaches are
found first and mark nothing. Sweep, once the mark is complete: those manifests (as
Distribution's `--delete-untagged` does), then the blobs nothing marked that are older than the
grace period, data and repository links both, then upload sessions idle for longer than their
maximum age.

The mark fails closed: a tag link that names no digest, or a manifest or index that cannot be
read, stops the run before anything is removed, since what it would have reached is unknown.
When a run stops later (the second look below, or a storage failure) it puts back what it had
set aside, and its report names everything removed before it stopped.

Blob removal is two-step so that an upload finishing at the same moment cannot lose its blob:
the data is first set aside (an atomic move into `_gc/trash/<run>`), then the repositories are
looked at again, and a blob that was linked or referenced by a manifest meanwhile is put back.
Uploads link their blob before they check whether its data exists, so either the upload sees
the data gone and moves its own copy in, or this second look sees the fresh link.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum

from nimbus.oci.documents import InvalidManifestError, ManifestDocument, read_manifest
from registry.errors import OCIError
from registry.reference import Digest
from registry.services.manifests import ManifestService
from registry.services.repositories import RepositoryService
from registry.storage import paths, walk
from registry.storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("nimbus.registry.gc")

DEFAULT_GRACE_SECONDS = 3600.0
DEFAULT_UPLOAD_MAX_AGE_SECONDS = 24 * 3600.0
# A progress message at least this often during long phases.
PROGRESS_INTERVAL = 0.5
# Removed items named in an abort message; all of them were reported as progress items.
ABORT_REPORT_ITEMS = 20


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


@dataclass(frozen=True)
class GcItem:
    kind: ItemKind
    digest: str = ""
    repository: str = ""
    upload_id: str = ""
    size: int = 0

    def describe(self) -> str:
        if self.kind == ItemKind.MANIFEST:
            return f"manifest {self.repository}@{self.digest}"
        if self.kind == ItemKind.UPLOAD:
            return f"upload {self.upload_id} of {self.repository}"
        return f"blob {self.digest}"


class CollectionRunning(Exception):
    """A garbage collection is already running in this process."""


class CollectionAborted(Exception):
    """The run stopped before its end; `removed` is everything it had removed by then."""

    def __init__(self, reason: str, removed: Sequence[GcItem] = ()) -> None:
        self.reason = reason
        self.removed = tuple(removed)
        super().__init__(f"garbage collection stopped: {reason}; {self._removed_text()}")

    def _removed_text(self) -> str:
        if not self.removed:
            return "nothing was removed"
        named = ", ".join(i.describe() for i in self.removed[:ABORT_REPORT_ITEMS])
        more = len(self.removed) - ABORT_REPORT_ITEMS
        tail = f" and {more} more, each reported as a progress item" if more > 0 else ""
        return f"removed before stopping ({len(self.removed)}): {named}{tail}"


class _Unreadable(Exception):
    """Something the mark must read cannot be read: the mark would be incomplete."""


@dataclass(frozen=True)
class GcOptions:
    dry_run: bool = False
    delete_untagged: bool = False
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    upload_max_age_seconds: float = DEFAULT_UPLOAD_MAX_AGE_SECONDS


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


@dataclass(frozen=True)
class _Stored:
    """A manifest as read from the store."""

    document: ManifestDocument
    size: int


@dataclass(frozen=True)
class _Untagged:
    """A manifest no tag reaches, to be removed once the mark is complete."""

    digest: Digest
    subject: Digest | None
    size: int


@dataclass
class _Run:
    options: GcOptions
    run_id: str
    started: float
    stats: GcStats
    # Blob digests referenced by some manifest.
    marked: set[str] = field(default_factory=set)
    # (repository, manifest digest) already marked, so a second look reads only new ones.
    seen: set[tuple[str, str]] = field(default_factory=set)
    # Manifests no tag reaches (delete_untagged): they mark nothing.
    untagged: dict[tuple[str, str], _Untagged] = field(default_factory=dict)
    # Blobs set aside and neither deleted nor put back yet.
    trashed: dict[str, tuple[Digest, int]] = field(default_factory=dict)
    # What this run has removed (never anything in a dry run).
    removed: list[GcItem] = field(default_factory=list)

    @property
    def cutoff_ns(self) -> int:
        return int((self.started - self.options.grace_seconds) * 1e9)

    @property
    def upload_cutoff_ns(self) -> int:
        return int((self.started - self.options.upload_max_age_seconds) * 1e9)

    def progress(self, phase: Phase, message: str, item: GcItem | None = None) -> GcProgress:
        return GcProgress(phase, message, replace(self.stats), self.options.dry_run, item)


def _digest_or_none(value: str) -> Digest | None:
    try:
        return Digest.parse(value)
    except OCIError:
        return None


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
        # Called once each run ends: (outcome: completed, dry_run or aborted, its stats).
        self.on_finished: Callable[[str, GcStats], None] | None = None
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
        """Collect, yielding progress; the last message has phase DONE.

        Raises CollectionAborted when the run cannot go on safely.
        """
        if self._lock.locked():
            raise CollectionRunning("a garbage collection is already running")
        async with self._lock:
            started = time.time()
            run = _Run(options, uuid.uuid4().hex, started, GcStats(started=started))
            log.info("garbage collection started", extra={"run": run.run_id, **vars(options)})
            try:
                await self._restore_leftovers()
                async for progress in self._mark(run):
                    yield progress
                for sweep in (self._sweep_manifests, self._sweep_blobs, self._sweep_uploads):
                    async for progress in sweep(run):
                        yield progress
            except Exception as exc:
                # Whatever stopped it (damage, a failing store), say what had been removed.
                reason = (
                    str(exc) if isinstance(exc, _Unreadable) else f"{type(exc).__name__}: {exc}"
                )
                aborted = CollectionAborted(reason, run.removed)
                run.stats.finished = time.time()
                self._finished("aborted", run.stats)
                log.error(
                    "garbage collection stopped",
                    extra={"run": run.run_id, "reason": reason, "removed": len(run.removed)},
                )
                raise aborted from exc
            run.stats.finished = time.time()
            if not options.dry_run:
                self.last = replace(run.stats)
            self._finished("dry_run" if options.dry_run else "completed", run.stats)
            verb = "would free" if options.dry_run else "freed"
            summary = (
                f"{verb} {run.stats.bytes_freed} bytes: {run.stats.blobs_deleted} blobs, "
                f"{run.stats.manifests_deleted} manifests, {run.stats.uploads_deleted} uploads"
            )
            log.info("garbage collection finished", extra={"run": run.run_id, **vars(run.stats)})
            yield run.progress(Phase.DONE, summary)

    def _finished(self, outcome: str, stats: GcStats) -> None:
        if self.on_finished is not None:
            self.on_finished(outcome, replace(stats))

    # -- mark ---------------------------------------------------------------------------

    async def _mark(self, run: _Run) -> AsyncIterator[GcProgress]:
        yield run.progress(Phase.MARK, "marking blobs referenced by manifests")
        names = await self.repositories.all_repositories()
        last = time.monotonic()
        for name in names:
            await self._mark_repository(run, name, run.options.delete_untagged)
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

    async def _mark_repository(self, run: _Run, name: str, find_untagged: bool) -> None:
        """Mark what every manifest of `name` not marked before references."""
        revisions = await walk.revisions(self.driver, name)
        tagged = await self._tag_targets(name)
        # Manifests read in this repository, so that each is read once.
        read: dict[str, _Stored] = {}
        if find_untagged:
            await self._find_untagged(run, name, revisions, tagged, read)
        for digest in [*revisions, *tagged]:
            key = (name, str(digest))
            if key in run.seen or (find_untagged and key in run.untagged):
                continue
            stored = await self._read(run, name, digest, read)
            read.pop(str(digest), None)
            run.seen.add(key)
            run.stats.manifests_marked += 1
            self._mark_blob(run, str(digest))
            for reference in stored.document.references():
                self._mark_blob(run, reference)

    @staticmethod
    def _mark_blob(run: _Run, digest: str) -> None:
        if digest not in run.marked:
            run.marked.add(digest)
            run.stats.blobs_marked += 1

    async def _tag_targets(self, name: str) -> list[Digest]:
        found = []
        for tag in await walk.tags(self.driver, name):
            try:
                raw = await self.driver.get_content(paths.tag_link(name, tag))
            except PathNotFoundError:
                continue  # deleted since the listing, or its link not written yet
            try:
                found.append(Digest.parse(raw.decode().strip()))
            except (OCIError, UnicodeDecodeError):
                raise _Unreadable(
                    f"tag {name}:{tag} does not link to a digest ({raw[:80]!r})"
                ) from None
        return found

    async def _read(
        self, run: _Run, name: str, digest: Digest, read: dict[str, _Stored]
    ) -> _Stored:
        """A manifest of `name`, or _Unreadable: what it references cannot be left unknown."""
        stored = read.get(str(digest))
        if stored is not None:
            return stored
        try:
            data = await self.driver.get_content(paths.blob_data(digest))
        except PathNotFoundError:
            data = await self._read_set_aside(run, name, digest)
        try:
            document = await asyncio.to_thread(read_manifest, data)
        except InvalidManifestError as exc:
            raise _Unreadable(f"manifest {name}@{digest} cannot be read ({exc})") from None
        stored = read[str(digest)] = _Stored(document, len(data))
        return stored

    async def _read_set_aside(self, run: _Run, name: str, digest: Digest) -> bytes:
        # Pushed again after this run set its old copy aside: the second look reads that copy.
        if str(digest) in run.trashed:
            try:
                return await self.driver.get_content(paths.gc_trash_entry(run.run_id, digest))
            except PathNotFoundError:
                pass
        raise _Unreadable(f"manifest {name}@{digest} has no content in the store")

    # -- untagged manifests -------------------------------------------------------------

    async def _find_untagged(
        self,
        run: _Run,
        name: str,
        revisions: list[Digest],
        tagged: list[Digest],
        read: dict[str, _Stored],
    ) -> None:
        reachable = await self._reachable(run, name, tagged, {str(d) for d in revisions}, read)
        for digest in revisions:
            if str(digest) in reachable:
                continue
            link = await self.driver.stat(paths.revision_link(name, digest))
            # Index children are pushed before their index: young manifests are kept.
            if link is None or link.modified_ns >= run.cutoff_ns:
                continue
            stored = await self._read(run, name, digest, read)
            read.pop(str(digest), None)
            subject = stored.document.subject
            run.untagged[(name, str(digest))] = _Untagged(
                digest, _digest_or_none(subject.digest) if subject else None, stored.size
            )

    async def _reachable(
        self,
        run: _Run,
        name: str,
        roots: list[Digest],
        revisions: set[str],
        read: dict[str, _Stored],
    ) -> set[str]:
        """Manifests reached from the tags: index children and referrers, transitively.

        Only revisions are followed beyond the tags: nothing else here could be removed.
        """
        reachable: set[str] = set()
        pending = list(roots)
        while pending:
            digest = pending.pop()
            if str(digest) in reachable:
                continue
            reachable.add(str(digest))
            stored = await self._read(run, name, digest, read)
            for child in stored.document.manifests:
                found = _digest_or_none(child.digest)
                if found is not None and str(found) in revisions:
                    pending.append(found)
            for referrer in await walk.referrers(self.driver, name, digest):
                if str(referrer) in revisions:
                    pending.append(referrer)
        return reachable

    async def _sweep_manifests(self, run: _Run) -> AsyncIterator[GcProgress]:
        if not run.options.delete_untagged:
            return
        yield run.progress(Phase.SWEEP_MANIFESTS, f"{len(run.untagged)} manifests no tag reaches")
        verb = "would remove" if run.options.dry_run else "removed"
        for (name, _), untagged in sorted(run.untagged.items()):
            digest = untagged.digest
            item = GcItem(ItemKind.MANIFEST, str(digest), name, size=untagged.size)
            if not run.options.dry_run:
                # Pushed again (or deleted) since the mark: not this run's to remove.
                link = await self.driver.stat(paths.revision_link(name, digest))
                if link is None or link.modified_ns >= run.cutoff_ns:
                    continue
                await self._remove_manifest(name, untagged)
                run.removed.append(item)
            run.stats.manifests_deleted += 1
            yield run.progress(Phase.SWEEP_MANIFESTS, f"{verb} untagged {name}@{digest}", item)

    async def _remove_manifest(self, name: str, untagged: _Untagged) -> None:
        """Forget a manifest revision (its blobs go in the blob sweep)."""
        if untagged.subject is not None:
            entry = paths.referrer_entry(name, untagged.subject, untagged.digest)
            await self._delete_quietly(entry)
        await self._delete_quietly(paths.revision_link(name, untagged.digest).rsplit("/", 1)[0])
        self.manifests.forget(name, untagged.digest)

    async def _delete_quietly(self, path: str) -> None:
        try:
            await self.driver.delete(path)
        except PathNotFoundError:
            pass

    # -- blobs --------------------------------------------------------------------------

    async def _sweep_blobs(self, run: _Run) -> AsyncIterator[GcProgress]:
        yield run.progress(Phase.SWEEP_BLOBS, "looking for unreferenced blobs")
        candidates: dict[str, tuple[Digest, int]] = {}
        async for digest in walk.blobs(self.driver):
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
        try:
            await self._set_aside(run, candidates)
            # The second look: anything linked or referenced since the first goes back.
            for name in await self.repositories.all_repositories():
                await self._mark_repository(run, name, find_untagged=False)
            relinked = await self._recently_linked(run, run.trashed)
            for key, (digest, size) in list(run.trashed.items()):
                entry = paths.gc_trash_entry(run.run_id, digest)
                if key in run.marked or key in relinked:
                    await self._put_back(entry, digest)
                    del run.trashed[key]
                    run.stats.blobs_kept_recent += 1
                    continue
                await self._delete_quietly(entry)
                # Had a pull-through cache filled it, its record goes with it.
                await self._delete_quietly(paths.proxy_content(digest))
                del run.trashed[key]
                item = GcItem(ItemKind.BLOB, str(digest), size=size)
                run.removed.append(item)
                run.stats.blobs_deleted += 1
                run.stats.bytes_freed += size
                yield run.progress(Phase.SWEEP_BLOBS, f"removed blob {digest}", item)
            await self._delete_quietly(paths.gc_trash_run(run.run_id))
        except BaseException:
            # Blobs left set aside are out of reach of pulls: return them before stopping.
            await self._put_all_back(run)
            raise

    async def _recently_linked(
        self, run: _Run, candidates: dict[str, tuple[Digest, int]]
    ) -> set[str]:
        """Candidates some repository linked (upload or mount) after the cutoff."""
        recent: set[str] = set()
        if not candidates:
            return recent
        for name in await walk.repositories(self.driver):
            for digest in await walk.layers(self.driver, name):
                if str(digest) not in candidates:
                    continue
                info = await self.driver.stat(paths.layer_link(name, digest))
                if info is not None and info.modified_ns >= run.cutoff_ns:
                    recent.add(str(digest))
        return recent

    async def _set_aside(self, run: _Run, candidates: dict[str, tuple[Digest, int]]) -> None:
        for key, (digest, size) in candidates.items():
            try:
                await self.driver.move(
                    paths.blob_data(digest), paths.gc_trash_entry(run.run_id, digest)
                )
            except PathNotFoundError:
                continue
            run.trashed[key] = (digest, size)

    async def _put_back(self, entry: str, digest: Digest) -> None:
        try:
            # An upload may have moved its own copy in meanwhile: same bytes, either is right.
            await self.driver.move(entry, paths.blob_data(digest))
        except PathNotFoundError:
            pass

    async def _put_all_back(self, run: _Run) -> None:
        """Return every blob still set aside, when the run stops before deciding on them."""
        for digest, _ in list(run.trashed.values()):
            try:
                await self._put_back(paths.gc_trash_entry(run.run_id, digest), digest)
            except Exception:
                # Left in the trash: the next collection puts it back before anything else.
                log.exception("cannot put back a blob", extra={"digest": str(digest)})
                continue
            del run.trashed[str(digest)]
        if not run.trashed:
            await self._delete_quietly(paths.gc_trash_run(run.run_id))

    async def _restore_leftovers(self) -> None:
        """Put back blobs an interrupted collection had set aside; this run decides again."""
        for run_id in await walk.trash_runs(self.driver):
            for digest in await walk.trash(self.driver, run_id):
                await self._put_back(paths.gc_trash_entry(run_id, digest), digest)
            await self._delete_quietly(paths.gc_trash_run(run_id))

    # -- uploads ------------------------------------------------------------------------

    async def _sweep_uploads(self, run: _Run) -> AsyncIterator[GcProgress]:
        yield run.progress(Phase.SWEEP_UPLOADS, "looking for stale upload sessions")
        verb = "would remove" if run.options.dry_run else "removed"
        markers = {*paths.REPOSITORY_MARKERS, paths.UPLOADS}
        for name in await walk.repositories(self.driver, markers):
            for upload_id in await walk.uploads(self.driver, name):
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
                size = data.size if data else 0
                item = GcItem(ItemKind.UPLOAD, repository=name, upload_id=upload_id, size=size)
                if not run.options.dry_run:
                    await self._delete_quietly(paths.upload_dir(name, upload_id))
                    run.removed.append(item)
                run.stats.uploads_deleted += 1
                yield run.progress(
                    Phase.SWEEP_UPLOADS, f"{verb} upload {upload_id} of {name}", item
                )
