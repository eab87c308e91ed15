"""Retention: which tags and manifests a rule deletes, and deleting them (or only saying so).

A run first plans, reading only: per repository under a rule, the tags it keeps (the union of
the rule's keeps, and every immutable tag) and the untagged manifests older than the rule's
`untagged_older_than` that nothing kept reaches (a kept index's children, referrers whose
subject is kept, recursively). A dry run reports that plan; a run deletes it through the
manifest service, so every deletion is the same DELETE event a client's would be. At
deletion each item is looked at again, and one that changed meanwhile (a tag moved, a manifest
re-pushed or tagged) is left alone and counted as skipped. Blobs go with garbage collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum

from nimbus.oci.documents import ManifestDocument
from registry.context import RequestContext
from registry.errors import OCIError
from registry.lifecycle.lease import Lease, LeaseHeld
from registry.lifecycle.pulltimes import PullTimes
from registry.lifecycle.rules import Policies, RetentionRule
from registry.lifecycle.schedule import Schedule, parse_schedule
from registry.lifecycle.store import PolicyStore
from registry.reference import Digest
from registry.services.manifests import ManifestService
from registry.services.repositories import RepositoryService
from registry.storage import paths, walk
from registry.storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("nimbus.registry.retention")

RETENTION_CONTEXT = RequestContext(request_id="retention", method="DELETE", actor="retention")

__all__ = ["LeaseHeld", "RetentionService", "UnknownRule"]


class UnknownRule(ValueError):
    """A run was asked for rules that do not exist."""


class Phase(IntEnum):
    """Values match RetentionProgress.Phase in proto/nimbus/v1/registry.proto."""

    PLAN = 1
    DELETE_TAGS = 2
    DELETE_MANIFESTS = 3
    DONE = 4


class ItemKind(IntEnum):
    TAG = 1
    MANIFEST = 2


@dataclass(frozen=True, slots=True)
class RetentionItem:
    kind: ItemKind
    repository: str
    digest: str
    rule: str
    tag: str = ""
    size: int = 0

    def describe(self) -> str:
        if self.kind == ItemKind.TAG:
            return f"tag {self.repository}:{self.tag} ({self.digest})"
        return f"manifest {self.repository}@{self.digest}"


@dataclass(frozen=True, slots=True)
class RetentionStats:
    repositories: int = 0
    tags_kept: int = 0
    tags_deleted: int = 0
    manifests_deleted: int = 0
    bytes_freed: int = 0
    skipped: int = 0
    started: float = 0.0
    finished: float = 0.0


@dataclass(frozen=True, slots=True)
class RetentionProgress:
    phase: Phase
    message: str
    stats: RetentionStats
    dry_run: bool
    item: RetentionItem | None = None


@dataclass(slots=True)
class _RepoPlan:
    name: str
    rule: RetentionRule
    tags_kept: list[str] = field(default_factory=list)
    tags: list[RetentionItem] = field(default_factory=list)
    manifests: list[RetentionItem] = field(default_factory=list)
    # Only untagged manifests last pushed before this (ns) may be deleted.
    cutoff_ns: int = 0


@dataclass(frozen=True, slots=True)
class _Tag:
    name: str
    digest: Digest
    pushed_ns: int


class RetentionService:
    def __init__(
        self,
        driver: StorageDriver,
        repositories: RepositoryService,
        manifests: ManifestService,
        store: PolicyStore,
        pulls: PullTimes,
        lease_ttl: float = 60.0,
    ) -> None:
        self.driver = driver
        self.repositories = repositories
        self.manifests = manifests
        self.store = store
        self.pulls = pulls
        self.lease = Lease(driver, "retention", lease_ttl)
        self.last: RetentionStats | None = None

    # -- planning -------------------------------------------------------------------------

    async def _tags(self, name: str) -> list[_Tag]:
        found = []
        for tag in await walk.tags(self.driver, name):
            link = paths.tag_link(name, tag)
            try:
                raw, info = await asyncio.gather(
                    self.driver.get_content(link), self.driver.stat(link)
                )
            except PathNotFoundError:
                continue
            if info is None:
                continue
            found.append(_Tag(tag, Digest.parse(raw.decode().strip()), info.modified_ns))
        return found

    async def _pulled(self, name: str, tag: _Tag) -> float:
        record = await self.pulls.get(name, tag.digest)
        return record.tags.get(tag.name, 0.0)

    async def _kept_tags(
        self, policies: Policies, rule: RetentionRule, name: str, tags: list[_Tag], now: float
    ) -> set[str]:
        if not rule.selects_tags:
            return {t.name for t in tags}
        kept = {t.name for t in tags if policies.immutable_rule(name, t.name) is not None}
        newest = sorted(tags, key=lambda t: (t.pushed_ns, t.name), reverse=True)
        if rule.keep_last:
            kept.update(t.name for t in newest[: rule.keep_last])
        if rule.pushed_within is not None:
            since = (now - rule.pushed_within) * 1e9
            kept.update(t.name for t in tags if t.pushed_ns >= since)
        if rule.pulled_within is not None:
            since_s = now - rule.pulled_within
            for tag in tags:
                if await self._pulled(name, tag) >= since_s:
                    kept.add(tag.name)
        kept.update(t.name for t in tags if rule.keeps_name(t.name))
        return kept

    async def _plan_repository(
        self, policies: Policies, rule: RetentionRule, name: str, now: float
    ) -> _RepoPlan:
        plan = _RepoPlan(name, rule)
        tags = await self._tags(name)
        kept = await self._kept_tags(policies, rule, name, tags, now)
        plan.tags_kept = sorted(kept)
        for tag in sorted(tags, key=lambda t: t.name):
            if tag.name not in kept:
                plan.tags.append(
                    RetentionItem(ItemKind.TAG, name, str(tag.digest), rule.name, tag.name)
                )
        if rule.untagged_older_than is None:
            return plan
        plan.cutoff_ns = int((now - rule.untagged_older_than) * 1e9)
        revisions = await walk.revisions(self.driver, name)
        documents: dict[str, ManifestDocument] = {}
        sizes: dict[str, int] = {}
        pushed: dict[str, int] = {}
        for revision in revisions:
            info = await self.driver.stat(paths.revision_link(name, revision))
            # Fails closed: a manifest that cannot be read stops this repository's plan.
            manifest = await self.manifests.load(revision)
            documents[str(revision)] = await manifest.document()
            sizes[str(revision)] = manifest.size
            pushed[str(revision)] = info.modified_ns if info is not None else now_ns(now)
        referrers: dict[str, list[str]] = {}
        for digest, document in documents.items():
            if document.subject is not None:
                referrers.setdefault(document.subject.digest, []).append(digest)
        roots = {str(t.digest) for t in tags if t.name in kept}
        roots.update(d for d, ns in pushed.items() if ns >= plan.cutoff_ns)
        reached: set[str] = set()
        stack = list(roots)
        while stack:
            digest = stack.pop()
            if digest in reached:
                continue
            reached.add(digest)
            listed = documents.get(digest)
            if listed is not None and listed.is_index:
                stack.extend(child.digest for child in listed.manifests)
            stack.extend(referrers.get(digest, ()))
        doomed = [d for d in documents if d not in reached]
        # Blobs the remaining manifests use: the rest are freed with the doomed manifests.
        used: set[str] = set()
        for digest in reached:
            remaining = documents.get(digest)
            if remaining is not None:
                used.update(_blobs(remaining))
        counted: set[str] = set()
        blob_sizes = {
            b.digest: b.size
            for d in doomed
            for b in [documents[d].config, *documents[d].layers]
            if b is not None
        }
        # Indexes first, so no index is left listing a deleted child.
        for digest in sorted(doomed, key=lambda d: (not documents[d].is_index, d)):
            size = sizes[digest]
            for blob in _blobs(documents[digest]):
                if blob not in used and blob not in counted:
                    counted.add(blob)
                    size += blob_sizes.get(blob, 0)
            plan.manifests.append(
                RetentionItem(ItemKind.MANIFEST, name, digest, rule.name, size=size)
            )
        return plan

    # -- running --------------------------------------------------------------------------

    async def run(
        self, dry_run: bool, rules: Sequence[str] = ()
    ) -> AsyncIterator[RetentionProgress]:
        """Plan, then delete (or only report): one run at a time across replicas."""
        async with self.lease.hold():
            async for progress in self._run(dry_run, rules):
                yield progress

    async def run_detached(
        self, dry_run: bool, rules: Sequence[str] = ()
    ) -> AsyncIterator[RetentionProgress]:
        """As `run`, but a caller that goes away does not stop the run half-way."""
        queue: asyncio.Queue[RetentionProgress | BaseException | None] = asyncio.Queue()

        async def drive() -> None:
            try:
                async for progress in self.run(dry_run, rules):
                    queue.put_nowait(progress)
            except BaseException as error:  # handed to the caller
                queue.put_nowait(error)
                return
            queue.put_nowait(None)

        task = asyncio.create_task(drive())
        try:
            while True:
                got = await queue.get()
                if got is None:
                    return
                if isinstance(got, BaseException):
                    raise got
                yield got
        finally:
            if task.done():
                with contextlib.suppress(BaseException):
                    task.result()

    async def _run(self, dry_run: bool, rules: Sequence[str]) -> AsyncIterator[RetentionProgress]:
        started = time.time()
        stats = RetentionStats(started=started)
        policies = await self.store.current()
        unknown = sorted(set(rules) - {r.name for r in policies.retention})
        if unknown:
            raise UnknownRule(f"no retention rule named {', '.join(repr(u) for u in unknown)}")
        # Pulls this process noted are stored first, so every replica plans with them.
        await self.pulls.flush()
        plans: list[_RepoPlan] = []
        for name in await self.repositories.all_repositories():
            rule = policies.retention_for(name)
            if rule is None or (rules and rule.name not in rules):
                continue
            try:
                plans.append(await self._plan_repository(policies, rule, name, started))
            except (OCIError, ValueError) as error:
                log.warning(
                    "retention skips a repository it cannot read",
                    extra={"repository": name, "error": str(error)},
                )
                yield RetentionProgress(
                    Phase.PLAN, f"skipped {name}: cannot read it ({error})", stats, dry_run
                )
        stats = replace(
            stats,
            repositories=len(plans),
            tags_kept=sum(len(p.tags_kept) for p in plans),
        )
        planned_tags = sum(len(p.tags) for p in plans)
        planned_manifests = sum(len(p.manifests) for p in plans)
        yield RetentionProgress(
            Phase.PLAN,
            f"{len(plans)} repositories under retention: {stats.tags_kept} tags kept, "
            f"{planned_tags} tags and {planned_manifests} manifests to delete",
            stats,
            dry_run,
        )
        for plan in plans:
            for item in plan.tags:
                if not dry_run and not await self._delete_tag(item):
                    stats = replace(stats, skipped=stats.skipped + 1)
                    continue
                stats = replace(stats, tags_deleted=stats.tags_deleted + 1)
                verb = "would delete" if dry_run else "deleted"
                yield RetentionProgress(
                    Phase.DELETE_TAGS, f"{verb} {item.describe()}", stats, dry_run, item
                )
        for plan in plans:
            for item in plan.manifests:
                if not dry_run and not await self._delete_manifest(item, plan.cutoff_ns):
                    stats = replace(stats, skipped=stats.skipped + 1)
                    continue
                stats = replace(
                    stats,
                    manifests_deleted=stats.manifests_deleted + 1,
                    bytes_freed=stats.bytes_freed + item.size,
                )
                verb = "would delete" if dry_run else "deleted"
                yield RetentionProgress(
                    Phase.DELETE_MANIFESTS, f"{verb} {item.describe()}", stats, dry_run, item
                )
        stats = replace(stats, finished=time.time())
        if not dry_run:
            self.last = stats
        yield RetentionProgress(
            Phase.DONE,
            f"{'would delete' if dry_run else 'deleted'} {stats.tags_deleted} tags and "
            f"{stats.manifests_deleted} manifests ({stats.bytes_freed} bytes once collected)"
            + (f"; {stats.skipped} changed meanwhile and were left alone" if stats.skipped else ""),
            stats,
            dry_run,
        )

    async def _delete_tag(self, item: RetentionItem) -> bool:
        try:
            raw = await self.driver.get_content(paths.tag_link(item.repository, item.tag))
        except PathNotFoundError:
            return False
        if raw.decode().strip() != item.digest:
            return False
        try:
            await self.manifests.delete(item.repository, item.tag, RETENTION_CONTEXT)
        except OCIError as error:
            log.info("retention left a tag", extra={"tag": item.describe(), "error": str(error)})
            return False
        return True

    async def _delete_manifest(self, item: RetentionItem, cutoff_ns: int) -> bool:
        digest = Digest.parse(item.digest)
        info = await self.driver.stat(paths.revision_link(item.repository, digest))
        # Re-pushed (the link rewritten) or tagged since the plan: it stays.
        if info is None or info.modified_ns >= cutoff_ns:
            return False
        if await self.manifests.tags_of(item.repository, digest):
            return False
        try:
            await self.manifests.delete(item.repository, item.digest, RETENTION_CONTEXT)
        except OCIError as error:
            log.info(
                "retention left a manifest", extra={"item": item.describe(), "error": str(error)}
            )
            return False
        await self.pulls.forget(item.repository, digest)
        return True

    # -- schedule -------------------------------------------------------------------------

    async def scheduled(self, interval: float) -> None:
        """Run every ``interval`` seconds; a replica finding the lease held skips that turn."""
        while True:
            await asyncio.sleep(interval)
            await self.run_scheduled()

    async def run_scheduled(self, rules: Sequence[str] = ()) -> None:
        """One scheduled run (of ``rules``, or all); a replica finding the lease held leaves
        the turn to the holder. Failures are logged: the schedule goes on."""
        try:
            async for progress in self.run(dry_run=False, rules=rules):
                if progress.phase == Phase.DONE:
                    log.info(
                        "scheduled retention run",
                        extra={"summary": progress.message, "rules": list(rules)},
                    )
        except LeaseHeld:
            return
        except Exception as error:
            log.warning("scheduled retention run failed", extra={"error": str(error)})

    @staticmethod
    def schedules(policies: Policies) -> dict[str, Schedule]:
        """The rules that run by themselves, by name."""
        return {
            r.name: parse_schedule(r.schedule, f"retention {r.name}.schedule")
            for r in policies.retention
            if r.schedule
        }


def _blobs(document: ManifestDocument) -> list[str]:
    return [b.digest for b in [document.config, *document.layers] if b is not None]


def now_ns(now: float) -> int:
    return int(now * 1e9)
