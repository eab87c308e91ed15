"""What the registry holds, for operators: repository summaries, tags, manifest details, figures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from nimbus.oci import mediatypes as mt
from nimbus.oci.documents import Descriptor, Platform
from registry.errors import ErrorCode, OCIError
from registry.reference import Digest, validate_name
from registry.services.manifests import ManifestService
from registry.services.repositories import Page, RepositoryService
from registry.storage import paths, walk
from registry.storage.driver import PathNotFoundError, StorageDriver

T = TypeVar("T")
# Config blobs larger than this are not read for their platform (real ones are a few KiB).
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# Storage lookups in flight at once while summarising a page.
LOOKUP_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class RepositorySummary:
    name: str
    tag_count: int
    manifest_count: int
    # Bytes of its manifests, configs and layers, each distinct digest once.
    size: int = 0
    # Newest tag link (or, untagged, manifest link) modification; 0 when it has neither.
    last_pushed_ns: int = 0


# Orders of `summaries`; a leading "-" reverses.
ORDERS = ("name", "tags", "size", "last_pushed")


@dataclass(frozen=True, slots=True)
class RepositoryQuery:
    """Which repositories a listing shows, in what order."""

    # Case-insensitive substring of the name; empty: all.
    text: str = ""
    order_by: str = "name"
    # None: every repository; else only names it accepts (the access rules of a user).
    visible: Callable[[str], bool] | None = None

    @property
    def key(self) -> str:
        return self.order_by.removeprefix("-") or "name"

    @property
    def descending(self) -> bool:
        return self.order_by.startswith("-")

    def validate(self) -> None:
        if self.key not in ORDERS:
            raise OCIError(
                ErrorCode.PAGINATION_NUMBER_INVALID,
                f"order_by: one of {', '.join(ORDERS)} (a leading '-' reverses), got "
                f"{self.order_by!r}",
            )

    def matches(self, name: str) -> bool:
        if self.text and self.text.lower() not in name.lower():
            return False
        return self.visible is None or self.visible(name)


@dataclass(frozen=True, slots=True)
class TagInfo:
    name: str
    digest: str
    media_type: str
    size: int
    updated_ns: int
    # Seconds since the epoch; 0 when never pulled through this tag.
    last_pulled: float = 0.0


@dataclass(frozen=True, slots=True)
class ManifestDetails:
    repository: str
    digest: str
    media_type: str
    size: int
    total_size: int
    artifact_type: str
    tags: list[str]
    platforms: list[Platform]
    config: Descriptor | None
    layers: list[Descriptor]
    manifests: list[Descriptor]
    referrers: list[Descriptor]
    subject: Descriptor | None
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True)
class StoreStats:
    repositories: int
    tags: int
    manifests: int
    blobs: int
    blob_bytes: int
    uploads_in_progress: int


async def _decode(data: bytes) -> Any:
    """A stored JSON document (an image config, up to 4 MiB), decoded in a thread."""
    return await asyncio.to_thread(json.loads, data)


async def _bounded(coroutines: list[Awaitable[T]], limit: int = LOOKUP_CONCURRENCY) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def run(coroutine: Awaitable[T]) -> T:
        async with gate:
            return await coroutine

    return list(await asyncio.gather(*(run(c) for c in coroutines)))


def _offset(token: str) -> int:
    if not token:
        return 0
    if token[:1] == "o" and token[1:].isdigit():
        return int(token[1:])
    raise OCIError(ErrorCode.PAGINATION_NUMBER_INVALID, "page_token: not one this order gave")


def _sort_value(summary: RepositorySummary, key: str) -> int:
    if key == "tags":
        return summary.tag_count
    if key == "size":
        return summary.size
    return summary.last_pushed_ns


# When a manifest was last pulled through a tag (0: never), as the lifecycle layer records it.
LastPulled = Callable[[str, Digest, str], Awaitable[float]]


class InventoryService:
    def __init__(
        self,
        driver: StorageDriver,
        repositories: RepositoryService,
        manifests: ManifestService,
        last_pulled: LastPulled | None = None,
    ) -> None:
        self.driver = driver
        self.repositories = repositories
        self.manifests = manifests
        self.last_pulled = last_pulled

    async def _require(self, name: str) -> None:
        validate_name(name)
        if not await self.repositories.exists(name):
            raise OCIError(ErrorCode.NAME_UNKNOWN, detail={"name": name})

    async def summaries(
        self, page_size: int, token: str, query: RepositoryQuery | None = None
    ) -> tuple[list[RepositorySummary], str, int]:
        """A page of the repositories `query` selects, the next page's token ('' at the end)
        and how many it selects in all.

        By name, the token is the last name shown and only the page is summarised; any other
        order summarises every selected repository and the token is an offset.
        """
        query = query or RepositoryQuery()
        query.validate()
        names = [n for n in await self.repositories.all_repositories() if query.matches(n)]
        total = len(names)
        if query.key == "name":
            if query.descending:
                names.reverse()
                if token:
                    names = [n for n in names if n < token]
            elif token:
                names = [n for n in names if n > token]
            page = names[:page_size]
            more = len(names) > page_size
            items = await _bounded([self._summary(name) for name in page])
            return items, (page[-1] if more and page else ""), total
        offset = _offset(token)
        every = await _bounded([self._summary(name) for name in names])
        every.sort(key=lambda s: (_sort_value(s, query.key), s.name), reverse=query.descending)
        page_items = every[offset : offset + page_size]
        more = offset + page_size < len(every)
        return page_items, (f"o{offset + page_size}" if more else ""), total

    async def _summary(self, name: str) -> RepositorySummary:
        tags, revisions = await asyncio.gather(
            walk.tags(self.driver, name), walk.revisions(self.driver, name)
        )
        links = [paths.tag_link(name, t) for t in tags] or [
            paths.revision_link(name, d) for d in revisions
        ]
        infos, sizes = await asyncio.gather(
            asyncio.gather(*(self.driver.stat(link) for link in links)),
            asyncio.gather(*(self._manifest_blobs(d) for d in revisions)),
        )
        distinct: dict[str, int] = {}
        for blob_sizes in sizes:
            distinct.update(blob_sizes)
        pushed = max((i.modified_ns for i in infos if i is not None), default=0)
        return RepositorySummary(name, len(tags), len(revisions), sum(distinct.values()), pushed)

    async def _counts(self, name: str) -> RepositorySummary:
        tags, revisions = await asyncio.gather(
            walk.tags(self.driver, name), walk.revisions(self.driver, name)
        )
        return RepositorySummary(name, len(tags), len(revisions))

    async def _manifest_blobs(self, digest: Digest) -> dict[str, int]:
        """A stored manifest's own digest, config and layers, with their sizes."""
        try:
            manifest = await self.manifests.load(digest)
            doc = await manifest.document()
        except (OCIError, ValueError):
            return {}
        found = {str(digest): manifest.size}
        for item in [doc.config, *doc.layers]:
            if item is not None:
                found[item.digest] = item.size
        return found

    async def tags(self, name: str, page_size: int, after: str) -> tuple[list[TagInfo], str]:
        await self._require(name)
        page: Page = await self.repositories.tags(name, page_size, after or None)
        found = await _bounded([self._tag(name, tag) for tag in page.items])
        return [t for t in found if t is not None], page.next_last or ""

    async def _tag(self, name: str, tag: str) -> TagInfo | None:
        link = paths.tag_link(name, tag)
        try:
            raw, info = await asyncio.gather(self.driver.get_content(link), self.driver.stat(link))
        except PathNotFoundError:
            return None  # deleted while listing
        digest = Digest.parse(raw.decode().strip())
        media_type, size = "", 0
        try:
            manifest = await self.manifests.load(digest)
            media_type, size = manifest.media_type, manifest.size
        except OCIError:
            pass
        pulled = await self.last_pulled(name, digest, tag) if self.last_pulled else 0.0
        updated = info.modified_ns if info else 0
        return TagInfo(tag, str(digest), media_type, size, updated, pulled)

    async def manifest(self, name: str, reference: str) -> ManifestDetails:
        await self._require(name)
        digest = await self.manifests.resolve(name, reference)
        manifest = await self.manifests.load(digest)
        doc = await manifest.document()
        config, layers, children = doc.config, list(doc.layers), list(doc.manifests)
        total = manifest.size
        platforms: list[Platform] = []
        if manifest.media_type in mt.INDEXES:
            platforms = [c.platform for c in children if c.platform is not None]
            totals = await _bounded([self._image_total(name, c) for c in children])
            total += sum(totals)
        else:
            total += (config.size if config else 0) + sum(layer.size for layer in layers)
            platform = await self._config_platform(config) if config else None
            if platform is not None:
                platforms = [platform]
        referrers, tags = await asyncio.gather(
            self.manifests.referrers(name, digest, None), self.manifests.tags_of(name, digest)
        )
        artifact_type = doc.effective_artifact_type if manifest.media_type in mt.MANIFESTS else ""
        return ManifestDetails(
            repository=name,
            digest=str(digest),
            media_type=manifest.media_type,
            size=manifest.size,
            total_size=total,
            artifact_type=artifact_type,
            tags=sorted(tags),
            platforms=platforms,
            config=config,
            layers=layers,
            manifests=children,
            referrers=[d for d in map(Descriptor.read, referrers) if d is not None],
            subject=doc.subject,
            annotations=doc.annotations,
        )

    async def _image_total(self, name: str, child: Descriptor) -> int:
        """A child manifest's own size plus its config and layers, when it is stored here."""
        try:
            manifest = await self.manifests.load(Digest.parse(child.digest))
        except OCIError:
            return child.size
        doc = await manifest.document()
        config_size = doc.config.size if doc.config else 0
        return manifest.size + config_size + sum(x.size for x in doc.layers)

    async def _config_platform(self, config: Descriptor) -> Platform | None:
        if config.size > MAX_CONFIG_BYTES or "json" not in config.media_type:
            return None
        try:
            digest = Digest.parse(config.digest)
            data = await self.driver.get_content(paths.blob_data(digest))
            doc = await _decode(data)
        except (OCIError, PathNotFoundError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict) or not doc.get("architecture"):
            return None  # an artifact's config, not an image's
        return Platform.read(doc)

    async def stats(self) -> StoreStats:
        names = await self.repositories.all_repositories()
        summaries = await _bounded([self._counts(name) for name in names])
        uploads = await _bounded([walk.uploads(self.driver, n) for n in names])
        blob_sizes = await _bounded(
            [self.driver.stat(paths.blob_data(d)) async for d in walk.blobs(self.driver)]
        )
        present = [info.size for info in blob_sizes if info is not None]
        return StoreStats(
            repositories=len(names),
            tags=sum(s.tag_count for s in summaries),
            manifests=sum(s.manifest_count for s in summaries),
            blobs=len(present),
            blob_bytes=sum(present),
            uploads_in_progress=sum(len(u) for u in uploads),
        )
