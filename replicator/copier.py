"""Copying an image's whole graph from one registry to another.

Order is what makes a copy safe to interrupt: blobs first, then each manifest after everything it
references, referrers after their subject, and the tag last, so a peer never serves a tag whose
content is incomplete. Whatever the peer already has is skipped (HEAD), so replaying a copy is
harmless. Blobs stream from the source's GET into the peer's upload, chunk by chunk, hashed on
the way: a blob is never held whole in memory or on disk, and a digest mismatch aborts the upload
before the peer could commit it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from nimbus import tracing
from nimbus.oci.client import Manifest, RegistryClient
from nimbus.oci.digests import Hasher, algorithm_of
from nimbus.oci.documents import Descriptor, ManifestDocument
from nimbus.oci.errors import DigestMismatchError, SizeMismatchError
from nimbus.oci.headers import ORIGIN_SITE_HEADER
from nimbus.oci.referrers import referrer_descriptor

log = logging.getLogger("nimbus.replicator.copier")

DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
READ_SIZE = 1024 * 1024
MAX_REFERRER_DEPTH = 4


class SourceMissingError(Exception):
    """What an event points at is gone from the source (deleted since): nothing to copy."""


@dataclass
class CopyResult:
    """What one copy did at the peer."""

    digest: str = ""
    bytes_copied: int = 0
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    manifests_copied: int = 0
    tagged: bool = False

    def add(self, other: CopyResult) -> None:
        self.bytes_copied += other.bytes_copied
        self.blobs_copied += other.blobs_copied
        self.blobs_mounted += other.blobs_mounted
        self.blobs_present += other.blobs_present
        self.manifests_copied += other.manifests_copied


class MountHints:
    """Which repository at a peer holds a blob, so another repository can mount it."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._items: OrderedDict[str, str] = OrderedDict()
        self._capacity = capacity

    def get(self, digest: str) -> str | None:
        return self._items.get(digest)

    def add(self, digest: str, repository: str) -> None:
        self._items[digest] = repository
        self._items.move_to_end(digest)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)


@dataclass
class _Run:
    """State of one copy: where it writes, its result and what it already handled."""

    target: RegistryClient
    result: CopyResult = field(default_factory=CopyResult)
    manifests_done: set[str] = field(default_factory=set)


class Copier:
    """Copies from ``source`` to ``target``; one per peer, shared by concurrent copies."""

    def __init__(
        self,
        source: RegistryClient,
        target: RegistryClient,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        blob_concurrency: int = 4,
        hints: MountHints | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.chunk_size = chunk_size
        self.hints = hints or MountHints()
        self.on_bytes = on_bytes
        self._blob_slots = asyncio.Semaphore(blob_concurrency)
        # Two copies needing the same blob at the same peer repository share one transfer.
        self._inflight: dict[tuple[str, str], asyncio.Future[int]] = {}

    async def copy(
        self,
        repository: str,
        reference: str,
        *,
        tag: str = "",
        origin_site: str = "",
        target_repository: str | None = None,
        traceparent: str = "",
    ) -> CopyResult:
        """Copy ``repository:reference`` (a tag or a digest) with everything it references.

        ``tag`` (by default the reference when it is a tag) is set at the peer last, to the
        digest copied. Writes carry ``origin_site`` so a Nimbus peer's events name it.
        """
        destination = target_repository or repository
        manifest = await self.source.get_manifest(repository, reference)
        if manifest is None:
            raise SourceMissingError(f"{repository}:{reference} is not at the source")
        if not tag and ":" not in reference:
            tag = reference
        target = self.target
        if origin_site:
            target = target.with_headers({ORIGIN_SITE_HEADER: origin_site})
        if traceparent:
            # Every write of the copy is part of its span, so a Nimbus peer continues the trace.
            target = target.with_headers({tracing.HEADER: traceparent})
        run = _Run(target)
        run.result.digest = manifest.digest
        await self._copy_manifest(repository, destination, manifest, run, depth=0, tag=tag)
        return run.result

    async def _copy_manifest(
        self,
        repository: str,
        destination: str,
        manifest: Manifest,
        run: _Run,
        depth: int,
        tag: str = "",
    ) -> None:
        """Children, then referrers, then the manifest itself: by ``tag`` when given, so the
        peer records one write (and a Nimbus peer one event) per manifest, as the source did."""
        if manifest.digest in run.manifests_done:
            return
        run.manifests_done.add(manifest.digest)
        # The rules the peer will apply to the PUT, checked before anything is sent there.
        document = await manifest.document(strict=True)
        present = await run.target.head_manifest(destination, manifest.digest) is not None
        if not present:
            if document.is_index:
                await self._copy_children(repository, destination, document.manifests, run, depth)
            else:
                blobs = document.distributable_blobs()
                await self._copy_blobs(repository, destination, blobs, run)
        # Referrers may precede their subject (the spec allows it): the tag stays last.
        if depth < MAX_REFERRER_DEPTH:
            await self._copy_referrers(repository, destination, manifest.digest, run, depth)
        subject_indexed = False
        if not present:
            pushed = await run.target.put_manifest(
                destination, tag or manifest.digest, manifest.data, manifest.media_type
            )
            run.result.manifests_copied += 1
            run.result.tagged = bool(tag)
            subject_indexed = pushed.subject is not None
        elif tag:
            current = await run.target.head_manifest(destination, tag)
            if current is None or current.digest != manifest.digest:
                await run.target.put_manifest(destination, tag, manifest.data, manifest.media_type)
                run.result.tagged = True
        if document.subject is not None and not subject_indexed:
            await self._index_referrer(
                destination, document.subject.digest, manifest, document, run
            )

    async def _copy_children(
        self,
        repository: str,
        destination: str,
        children: tuple[Descriptor, ...],
        run: _Run,
        depth: int,
    ) -> None:
        async def one(descriptor: Descriptor) -> None:
            child = await self.source.get_manifest(repository, descriptor.digest)
            if child is None:
                raise SourceMissingError(
                    f"{repository}@{descriptor.digest} (index child) is not at the source"
                )
            await self._copy_manifest(repository, destination, child, run, depth)

        await _gather(one(d) for d in children)

    async def _copy_referrers(
        self, repository: str, destination: str, digest: str, run: _Run, depth: int
    ) -> None:
        for descriptor in await self.source.referrers(repository, digest):
            ref_digest = descriptor.get("digest")
            if not isinstance(ref_digest, str) or ref_digest in run.manifests_done:
                continue
            referrer = await self.source.get_manifest(repository, ref_digest)
            if referrer is None:
                continue  # deleted since the index was read
            await self._copy_manifest(repository, destination, referrer, run, depth + 1)

    async def _index_referrer(
        self,
        destination: str,
        subject: str,
        manifest: Manifest,
        document: ManifestDocument,
        run: _Run,
    ) -> None:
        """Keep the tag schema index of a peer without the referrers API up to date."""
        known = await run.target.referrers(destination, subject)
        if any(item.get("digest") == manifest.digest for item in known):
            return
        descriptor = referrer_descriptor(
            document, manifest.digest, len(manifest.data), manifest.media_type
        )
        await run.target.index_referrer(destination, subject, descriptor)

    # -- blobs --------------------------------------------------------------------------

    async def _copy_blobs(
        self, repository: str, destination: str, blobs: list[Descriptor], run: _Run
    ) -> None:
        await _gather(self._copy_blob_once(repository, destination, b, run) for b in blobs)

    async def _copy_blob_once(
        self, repository: str, destination: str, blob: Descriptor, run: _Run
    ) -> None:
        key = (destination, blob.digest)
        while (pending := self._inflight.get(key)) is not None:
            try:
                await asyncio.shield(pending)
            except _Abandoned:
                continue  # its copier was cancelled: this one copies the blob itself
            run.result.blobs_present += 1
            return
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            async with self._blob_slots:
                await self._copy_blob(repository, destination, blob, run)
            future.set_result(0)
        except asyncio.CancelledError:
            # A waiter must not get this task's cancellation as its own: its lane would end
            # as if stopped, with its messages held.
            future.set_exception(_Abandoned())
            future.exception()
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._inflight[key]

    async def _copy_blob(
        self, repository: str, destination: str, blob: Descriptor, run: _Run
    ) -> None:
        if await run.target.blob_size(destination, blob.digest) is not None:
            self.hints.add(blob.digest, destination)
            run.result.blobs_present += 1
            return
        location: str | None = None
        elsewhere = self.hints.get(blob.digest)
        if elsewhere and elsewhere != destination:
            location = await run.target.mount_blob(destination, blob.digest, elsewhere)
            if location is None:
                self.hints.add(blob.digest, destination)
                run.result.blobs_mounted += 1
                return
        if location is None:
            location = await run.target.start_upload(destination)
        log.info(
            "blob copy started",
            extra={"repository": destination, "digest": blob.digest, "size": blob.size},
        )
        try:
            await self._stream(repository, destination, blob, location, run)
        except aiohttp.ClientError as error:
            await _quietly(run.target.cancel_upload(destination, location))
            # aiohttp wraps what the body generator raised; the cause is what matters.
            raise _body_error(error) or error from None
        except BaseException:
            # Free the peer's session now; a later attempt starts a fresh one.
            await _quietly(run.target.cancel_upload(destination, location))
            raise
        self.hints.add(blob.digest, destination)
        run.result.blobs_copied += 1

    async def _stream(
        self, repository: str, destination: str, blob: Descriptor, location: str, run: _Run
    ) -> None:
        hasher = Hasher(algorithm_of(blob.digest))
        async with self.source.open_blob(repository, blob.digest) as response:
            size = blob.size
            if size <= self.chunk_size:
                body = self._read(response.content, hasher, size, blob, run, last=True)
                await run.target.finish_upload(destination, location, blob.digest, body, size)
                return
            offset = 0
            while offset < size:
                length = min(self.chunk_size, size - offset)
                last = offset + length == size
                body = self._read(response.content, hasher, length, blob, run, last=last)
                location = await run.target.upload_chunk(
                    destination, location, body, offset, length
                )
                offset += length
        await run.target.finish_upload(destination, location, blob.digest)

    async def _read(
        self,
        stream: aiohttp.StreamReader,
        hasher: Hasher,
        length: int,
        blob: Descriptor,
        run: _Run,
        last: bool,
    ) -> AsyncIterator[bytes]:
        """Exactly ``length`` bytes of the source stream, hashed (in a thread, off the loop).

        The digest is checked before the blob's last bytes are handed on, so on a mismatch the
        request body stays short and the peer can never commit the upload.
        """
        remaining = length
        while remaining:
            try:
                # Whole MiBs, not whatever the socket had: each is worth a hop to a thread.
                data = await stream.readexactly(min(remaining, READ_SIZE))
            except asyncio.IncompleteReadError as short:
                raise SizeMismatchError(
                    f"source ended early on {blob.digest}: "
                    f"{remaining - len(short.partial)} bytes missing"
                ) from None
            await hasher.update(data)
            remaining -= len(data)
            if not remaining and last:
                actual = hasher.digest()
                if actual != blob.digest:
                    raise DigestMismatchError(blob.digest, actual, "blob")
            run.result.bytes_copied += len(data)
            if self.on_bytes is not None:
                self.on_bytes(len(data))
            yield data


class _Abandoned(Exception):
    """The copy of a blob that others wait on was cancelled before it ended."""


def _body_error(error: BaseException) -> BaseException | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, DigestMismatchError | SizeMismatchError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def _gather(coroutines: Any) -> None:
    """Run together; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    if not tasks:
        return
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout=5)
    except Exception:  # best effort: the session expires at the peer anyway
        log.debug("could not cancel an upload session", exc_info=True)
