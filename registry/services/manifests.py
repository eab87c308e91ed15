"""Manifests and tags: validation, storage, content negotiation and the referrers index."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from nimbus.oci.documents import (
    LARGE_DOCUMENT_BYTES,
    InvalidManifestError,
    ManifestDocument,
    parse_manifest,
    read_manifest,
)
from nimbus.oci.referrers import referrer_descriptor
from registry.context import RequestContext
from registry.errors import ErrorCode, OCIError
from registry.events.sink import Action, EventSink, NullSink, RegistryEvent
from registry.lifecycle.hooks import NO_HOOKS, LifecycleHooks
from registry.reference import Digest, is_digest, is_tag, validate_tag
from registry.services.blobs import BlobService
from registry.storage import paths
from registry.storage.driver import PathNotFoundError, StorageDriver

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: Digest
    media_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    async def document(self) -> ManifestDocument:
        """The stored manifest's document model, read off the loop when it is large."""
        return await _read(self.data)


@dataclass(frozen=True, slots=True)
class PutResult:
    digest: Digest
    subject: Digest | None


class _ContentCache:
    """Manifests by digest; content-addressed, so entries never go stale."""

    def __init__(self, max_bytes: int) -> None:
        self._items: OrderedDict[str, Manifest] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes

    def get(self, key: str) -> Manifest | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, item: Manifest) -> None:
        key = str(item.digest)
        if key in self._items or item.size > self._max // 16:
            return
        self._items[key] = item
        self._bytes += item.size
        while self._bytes > self._max:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.size


class _TTLCache:
    """Recent lookups of mutable links (tags, revisions), kept ``ttl`` seconds.

    Writes through this process update it at once; a change made by another process (another
    worker or replica) is seen once the entry expires. A ttl of 0 turns it off.
    """

    def __init__(self, ttl: float, max_items: int = 65536) -> None:
        self.ttl = ttl
        self._items: dict[tuple[str, str], tuple[str, float]] = {}
        self._max = max_items

    def get(self, key: tuple[str, str]) -> str | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] < time.monotonic():
            del self._items[key]
            return None
        return item[0]

    def put(self, key: tuple[str, str], value: str) -> None:
        if self.ttl <= 0:
            return
        if len(self._items) >= self._max:
            self._items.clear()
        self._items[key] = (value, time.monotonic() + self.ttl)

    def drop(self, key: tuple[str, str]) -> None:
        self._items.pop(key, None)

    def drop_value(self, name: str, value: str) -> None:
        for key in [k for k, v in self._items.items() if k[0] == name and v[0] == value]:
            del self._items[key]


def accepts(accept: list[str], media_type: str) -> bool:
    if not accept:
        return True
    for item in accept:
        value = item.split(";", 1)[0].strip().lower()
        if value in ("*/*", "application/*", media_type):
            return True
    return False


class ManifestService:
    def __init__(
        self,
        driver: StorageDriver,
        blobs: BlobService,
        events: EventSink | None = None,
        emit_pulls: bool = False,
        link_cache_ttl: float = 1.0,
    ) -> None:
        self.driver = driver
        self.blobs = blobs
        self.events: EventSink = events or NullSink()
        self.emit_pulls = emit_pulls
        # Immutable tags, quotas and pull times (registry.lifecycle); none by default.
        self.hooks: LifecycleHooks = NO_HOOKS
        self._cache = _ContentCache(CACHE_BYTES)
        # Tags and revisions resolved recently: the hot path of every pull.
        self._tags = _TTLCache(link_cache_ttl)
        self._revisions = _TTLCache(link_cache_ttl)

    # -- reading ------------------------------------------------------------------------

    async def resolve(self, name: str, reference: str) -> Digest:
        """The digest a tag points to, or the digest itself once known to the repository."""
        key = (name, reference)
        if is_digest(reference):
            digest = Digest.parse(reference)
            if self._revisions.get(key) is None:
                if await self.driver.stat(paths.revision_link(name, digest)) is None:
                    raise OCIError(ErrorCode.MANIFEST_UNKNOWN, detail={"reference": reference})
                self._revisions.put(key, reference)
            return digest
        cached = self._tags.get(key)
        if cached is not None:
            return Digest.parse(cached)
        if not is_tag(reference):
            # Reading a name no tag can have finds nothing: 404, as Distribution and the
            # conformance suite expect (only a PUT or DELETE of it is a client error).
            raise OCIError(
                ErrorCode.MANIFEST_UNKNOWN,
                "no such manifest: the reference is neither a valid tag nor a digest",
                detail={"reference": reference},
            )
        try:
            raw = await self.driver.get_content(paths.tag_link(name, reference))
        except PathNotFoundError:
            raise OCIError(ErrorCode.MANIFEST_UNKNOWN, detail={"tag": reference}) from None
        digest = Digest.parse(raw.decode().strip())
        self._tags.put(key, str(digest))
        return digest

    async def load(self, digest: Digest) -> Manifest:
        cached = self._cache.get(str(digest))
        if cached is not None:
            return cached
        try:
            data = await self.driver.get_content(paths.blob_data(digest))
        except PathNotFoundError:
            raise OCIError(ErrorCode.MANIFEST_UNKNOWN, detail={"digest": str(digest)}) from None
        manifest = Manifest(digest, (await _read(data)).media_type, data)
        self._cache.put(manifest)
        return manifest

    async def get(
        self,
        name: str,
        reference: str,
        accept: list[str],
        ctx: RequestContext,
        count_pull: bool = True,
    ) -> Manifest:
        manifest = await self.load(await self.resolve(name, reference))
        if not accepts(accept, manifest.media_type):
            raise OCIError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest is {manifest.media_type}, which the Accept header does not allow",
                detail={"reference": reference},
            )
        if count_pull:
            self.hooks.pulled(name, manifest.digest, "" if is_digest(reference) else reference)
        if count_pull and self.emit_pulls:
            await self.events.emit(
                RegistryEvent(
                    Action.PULL,
                    name,
                    str(manifest.digest),
                    manifest.media_type,
                    manifest.size,
                    tag="" if is_digest(reference) else reference,
                    context=ctx,
                )
            )
        return manifest

    # -- writing ------------------------------------------------------------------------

    async def put(
        self,
        name: str,
        reference: str,
        data: bytes,
        content_type: str,
        ctx: RequestContext,
        from_upstream: bool = False,
    ) -> PutResult:
        """Store a manifest (and its tag). ``from_upstream``: a pull-through cache's copy, whose
        children and blobs come later, when asked for; no push event."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise OCIError(ErrorCode.PAYLOAD_TOO_LARGE, "manifest exceeds 4 MiB")
        tag = ""
        if is_digest(reference):
            expected = Digest.parse(reference)
            digest = Digest.of(data, expected.algorithm)
            if digest != expected:
                raise OCIError(
                    ErrorCode.DIGEST_INVALID,
                    "manifest digest does not match the reference",
                    detail={"reference": reference, "actual": str(digest)},
                )
        else:
            tag = validate_tag(reference)
            digest = Digest.of(data)
        try:
            if len(data) > LARGE_DOCUMENT_BYTES:
                document = await asyncio.to_thread(parse_manifest, data, content_type)
            else:
                document = parse_manifest(data, content_type)
        except InvalidManifestError as error:
            raise OCIError(ErrorCode.MANIFEST_INVALID, str(error)) from None
        media_type = document.media_type
        if from_upstream:
            subject = Digest.parse(document.subject.digest) if document.subject else None
        else:
            subject = await self._verify_references(name, document)

        guard = (
            contextlib.nullcontext()
            if from_upstream
            else self.hooks.putting_manifest(name, tag, digest, len(data))
        )
        async with guard:
            await self.driver.put_content(paths.blob_data(digest), data)
            await self.driver.put_content(paths.revision_link(name, digest), str(digest).encode())
            if subject is not None:
                await self._record_referrer(name, subject, digest, document, len(data))
            # The tag last: a reader never sees a tag whose manifest is not stored.
            self._revisions.put((name, str(digest)), str(digest))
            if tag:
                await self.driver.put_content(paths.tag_link(name, tag), str(digest).encode())
                self._tags.put((name, tag), str(digest))
        manifest = Manifest(digest, media_type, data)
        self._cache.put(manifest)
        if not from_upstream:
            await self.events.emit(
                RegistryEvent(
                    Action.PUSH, name, str(digest), media_type, len(data), tag=tag, context=ctx
                )
            )
        return PutResult(digest, subject)

    async def _verify_references(self, name: str, document: ManifestDocument) -> Digest | None:
        """The subject's digest, once everything the document lists is in the repository."""
        # Looked up all at once: each lookup is a thread hop of its own.
        if document.is_index:
            wanted = [child.digest for child in document.manifests]

            async def present(digest: str) -> bool:
                link = paths.revision_link(name, Digest.parse(digest))
                return await self.driver.stat(link) is not None
        else:
            wanted = [
                blob.digest
                for blob in [document.config, *document.layers]
                if blob is not None and blob.distributable
            ]

            async def present(digest: str) -> bool:
                return await self.blobs.exists_in(name, Digest.parse(digest))

        found = await asyncio.gather(*(present(d) for d in wanted))
        missing = [d for d, ok in zip(wanted, found, strict=True) if not ok]
        if missing:
            raise OCIError(
                ErrorCode.MANIFEST_BLOB_UNKNOWN,
                "manifest references content this repository does not have",
                detail={"missing": missing},
            )
        return Digest.parse(document.subject.digest) if document.subject is not None else None

    async def _record_referrer(
        self,
        name: str,
        subject: Digest,
        digest: Digest,
        document: ManifestDocument,
        size: int,
    ) -> None:
        descriptor = referrer_descriptor(document, str(digest), size)
        await self.driver.put_content(
            paths.referrer_entry(name, subject, digest), json.dumps(descriptor.to_json()).encode()
        )

    # -- deleting -----------------------------------------------------------------------

    async def delete(self, name: str, reference: str, ctx: RequestContext) -> None:
        if not is_digest(reference):
            await self._delete_tag(name, validate_tag(reference), ctx)
            return
        digest = Digest.parse(reference)
        manifest = await self.get(name, reference, [], ctx, count_pull=False)
        tags = await self.tags_of(name, digest)
        await self.hooks.deleting(name, tags)
        for tag in tags:
            self._tags.drop((name, tag))
            await self.driver.delete(paths.tag_dir(name, tag))
        self._revisions.drop((name, str(digest)))
        self._tags.drop_value(name, str(digest))
        await self.driver.delete(paths.revision_link(name, digest).rsplit("/", 1)[0])
        document = await _read(manifest.data)
        if document.subject is not None:
            try:
                subject = Digest.parse(document.subject.digest)
                await self.driver.delete(paths.referrer_entry(name, subject, digest))
            except (OCIError, PathNotFoundError):
                pass
        await self.events.emit(
            RegistryEvent(
                Action.DELETE, name, str(digest), manifest.media_type, manifest.size, context=ctx
            )
        )

    async def _delete_tag(self, name: str, tag: str, ctx: RequestContext) -> None:
        self._tags.drop((name, tag))
        digest = await self.resolve(name, tag)
        await self.hooks.deleting(name, [tag])
        self._tags.drop((name, tag))
        try:
            await self.driver.delete(paths.tag_dir(name, tag))
        except PathNotFoundError:
            raise OCIError(ErrorCode.MANIFEST_UNKNOWN, detail={"tag": tag}) from None
        media_type, size = "", 0
        try:
            manifest = await self.load(digest)
            media_type, size = manifest.media_type, manifest.size
        except OCIError:
            pass
        await self.events.emit(
            RegistryEvent(Action.DELETE, name, str(digest), media_type, size, tag=tag, context=ctx)
        )

    def forget(self, name: str, digest: Digest) -> None:
        """Drop cached lookups of a revision removed without `delete` (garbage collection)."""
        self._revisions.drop((name, str(digest)))
        self._tags.drop_value(name, str(digest))

    async def tags_of(self, name: str, digest: Digest) -> list[str]:
        found = []
        for tag in await self.driver.list(paths.tags_root(name)):
            try:
                raw = await self.driver.get_content(paths.tag_link(name, tag))
            except PathNotFoundError:
                continue
            if raw.decode().strip() == str(digest):
                found.append(tag)
        return found

    # -- referrers ----------------------------------------------------------------------

    async def referrers(
        self, name: str, subject: Digest, artifact_type: str | None
    ) -> list[dict[str, Any]]:
        directory = paths.referrers_dir(name, subject)
        result = []
        for entry in sorted(await self.driver.list(directory)):
            try:
                descriptor = json.loads(await self.driver.get_content(f"{directory}/{entry}"))
            except (PathNotFoundError, ValueError):
                continue
            if artifact_type and descriptor.get("artifactType") != artifact_type:
                continue
            result.append(descriptor)
        return result


async def _read(data: bytes) -> ManifestDocument:
    """A stored manifest's document (it was checked when it was put), off the loop if large."""
    if len(data) > LARGE_DOCUMENT_BYTES:
        return await asyncio.to_thread(read_manifest, data)
    return read_manifest(data)
