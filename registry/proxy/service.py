"""The pull-through cache's rules: what is served from storage, what is fetched or revalidated.

- A manifest by digest is immutable: fetched once, then served from storage.
- A manifest by tag is served from storage while younger than its upstream's `tag_ttl`; then a
  `HEAD` upstream revalidates it, and a changed digest fetches the new manifest.
- A blob is streamed to its clients while it is written to storage and hashed; the digest is
  checked before the blob is committed, so nothing partial or wrong is ever stored.
- Concurrent requests for the same missing content share one upstream request (single flight,
  across the workers of this registry too).
- When the upstream is down, too slow, or answers 429/5xx, a cached tag is served stale (with a
  `Warning` header); without a cached copy the client hears the upstream's trouble in the spec's
  error codes.

Everything filled goes through the blob, upload and manifest services into the normal storage,
so listing, garbage collection and the rest see it; a stored manifest emits one `fill`
event (never a push), so replication and webhooks may act on it; blobs emit none.
A repository no upstream serves is a local one, and every call here passes it through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp

from nimbus.oci.client import Manifest as UpstreamManifest
from registry.context import RequestContext
from registry.errors import ErrorCode, OCIError
from registry.events.sink import Action, RegistryEvent
from registry.metrics import RegistryMetrics
from registry.proxy.failures import STALE_WARNING, Failure, UpstreamContentError, classify
from registry.proxy.fills import BlobFill, FillState
from registry.proxy.lifecycle import CacheLifecycle, SweepLock, SweepReport
from registry.proxy.metrics import LifecycleMetrics
from registry.proxy.pulls import BlobStream, Pulls, ServedManifest, ServedReferrers, ServedTags
from registry.proxy.records import CacheRecords, ContentRecord, TagRecord
from registry.proxy.singleflight import SingleFlight
from registry.proxy.upstreams import Route, Router
from registry.proxy.usage import UsageLog
from registry.reference import Digest, is_digest, is_tag
from registry.services import Services
from registry.services.blobs import BlobInfo
from registry.services.repositories import paginate
from registry.storage import paths

log = logging.getLogger("nimbus.registry.proxy")

# Bytes read from the upstream at a time, written to the spool and handed to storage.
TEE_CHUNK = 256 * 1024
MANIFEST = "manifest"
BLOB = "blob"


class ProxyService(Pulls):
    def __init__(
        self,
        router: Router,
        services: Services,
        metrics: RegistryMetrics,
        work_dir: Path,
        max_bytes: int = 0,
        tag_max_idle: float = 0.0,
        evict_interval: float = 60.0,
        usage_flush_interval: float = 30.0,
    ) -> None:
        super().__init__(services)
        self.router = router
        self.metrics = metrics
        self.records = CacheRecords(services.driver)
        self.usage = UsageLog(self.records)
        self.lifecycle = CacheLifecycle(
            services.driver, services.manifests, router, self.records, max_bytes, tag_max_idle
        )
        self.lifecycle_metrics = LifecycleMetrics(metrics.registry)
        self.evict_interval = evict_interval
        self.usage_flush_interval = usage_flush_interval
        self.flights = SingleFlight(work_dir / "locks")
        self.sweep_lock = SweepLock(work_dir / "sweep.lock")
        self.spool_dir = work_dir / "spool"
        if router.enabled:
            self.flights.lock_dir.mkdir(parents=True, exist_ok=True)
            self.flights.remove_stale()
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            _remove_orphan_spools(self.spool_dir)
        self._fills: dict[str, BlobFill] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._every(self.usage_flush_interval, self.usage.flush)),
            asyncio.create_task(self._every(self.evict_interval, self.sweep_if_free)),
        ]

    async def close(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.usage.flush()
        await self.router.close()

    @staticmethod
    async def _every(seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                log.exception("cache maintenance failed; tried again later")

    async def sweep_if_free(self) -> SweepReport | None:
        """A lifecycle sweep, unless another worker of this registry is sweeping."""
        await self.usage.flush()
        with self.sweep_lock.held() as mine:
            if not mine:
                return None
            report = await self.lifecycle.sweep()
        self._count_sweep(report)
        return report

    def _count_sweep(self, report: SweepReport) -> None:
        self.lifecycle_metrics.cached_bytes.set(report.cached_bytes)
        self.count_removals(report)

    def count_removals(self, report: SweepReport) -> None:
        evictions = self.lifecycle_metrics.evictions
        if report.blobs_evicted:
            evictions.labels(BLOB).inc(report.blobs_evicted)
        if report.manifests_evicted:
            evictions.labels(MANIFEST).inc(report.manifests_evicted)
        if report.tags_removed:
            evictions.labels("tag").inc(report.tags_removed)

    # -- pushes -------------------------------------------------------------------------

    def check_writable(self, name: str, namespace: str | None = None) -> None:
        """Refuse a push or delete in a repository an upstream serves (DENIED)."""
        route = self.router.route(name, namespace)
        if route is not None:
            raise OCIError(
                ErrorCode.DENIED,
                f"{name} is in a cache of upstream {route.upstream.name}: it takes no pushes "
                "or deletes (push to the upstream, or to a name no upstream serves)",
                detail={"upstream": route.upstream.name},
            )

    # -- manifests ----------------------------------------------------------------------

    async def manifest(
        self,
        name: str,
        reference: str,
        accept: list[str],
        ctx: RequestContext,
        namespace: str | None = None,
        count_pull: bool = True,
    ) -> ServedManifest:
        manifests = self.services.manifests
        route = self.router.route(name, namespace)
        if route is None:
            return ServedManifest(await manifests.get(name, reference, accept, ctx, count_pull))
        stale = False
        if is_digest(reference):
            await self._ensure_digest(route, Digest.parse(reference), ctx)
        elif is_tag(reference):
            stale = await self._ensure_tag(route, reference, ctx)
        manifest = await manifests.get(route.name, reference, accept, ctx, count_pull)
        self.usage.content(manifest.digest)
        if is_tag(reference):
            self.usage.tag(route.name, reference)
        return ServedManifest(manifest, STALE_WARNING if stale else None)

    async def has_manifest(self, name: str, digest: Digest) -> bool:
        """Whether the cache holds this manifest in this repository (revision and content)."""
        return await self._has_manifest(name, digest)

    async def _has_manifest(self, name: str, digest: Digest) -> bool:
        driver = self.services.driver
        if await driver.stat(paths.revision_link(name, digest)) is None:
            return False
        return await driver.stat(paths.blob_data(digest)) is not None

    async def _ensure_digest(self, route: Route, digest: Digest, ctx: RequestContext) -> None:
        upstream = route.upstream.name
        if await self._has_manifest(route.name, digest):
            self.metrics.proxy_hits.labels(upstream, MANIFEST).inc()
            return
        async with self.flights.hold(f"manifest {upstream} {route.remote}@{digest}") as waited:
            if waited:
                self.metrics.proxy_singleflight_waits.labels(upstream, MANIFEST).inc()
                if await self._has_manifest(route.name, digest):
                    return
            self.metrics.proxy_misses.labels(upstream, MANIFEST).inc()
            what = f"manifest {route.remote}@{digest}"
            try:
                fetched = await self._fetch_manifest(route, str(digest))
            except Exception as exc:
                raise self._failure(route, what, exc, ErrorCode.MANIFEST_UNKNOWN).error from None
            if fetched is None:
                raise OCIError(
                    ErrorCode.MANIFEST_UNKNOWN,
                    f"upstream {upstream} has no {what}",
                    detail={"reference": str(digest)},
                )
            await self._store_manifest(route, str(digest), fetched, ctx)

    async def _ensure_tag(self, route: Route, tag: str, ctx: RequestContext) -> bool:
        """Make the cached tag current; True when it is served stale (upstream failing)."""
        upstream = route.upstream
        record = await self.records.tag(route.name, tag)
        if record is not None and record.fresh(upstream.tag_ttl):
            if await self._has_manifest(route.name, Digest.parse(record.digest)):
                self.metrics.proxy_hits.labels(upstream.name, MANIFEST).inc()
                return False
        async with self.flights.hold(f"tag {upstream.name} {route.remote}:{tag}") as waited:
            if waited:
                self.metrics.proxy_singleflight_waits.labels(upstream.name, MANIFEST).inc()
                record = await self.records.tag(route.name, tag)
                if record is not None and record.fresh(upstream.tag_ttl):
                    return False
            cached = record is not None and await self._has_manifest(
                route.name, Digest.parse(record.digest)
            )
            what = f"manifest {route.remote}:{tag}"
            try:
                if cached:
                    assert record is not None
                    await self._revalidate(route, tag, record, ctx)
                else:
                    self.metrics.proxy_misses.labels(upstream.name, MANIFEST).inc()
                    fetched = await self._fetch_manifest(route, tag)
                    if fetched is None:
                        raise OCIError(
                            ErrorCode.MANIFEST_UNKNOWN,
                            f"upstream {upstream.name} has no {what}",
                            detail={"tag": tag},
                        )
                    await self._store_manifest(route, tag, fetched, ctx)
            except OCIError:
                raise
            except Exception as exc:
                failure = self._failure(route, what, exc, ErrorCode.MANIFEST_UNKNOWN)
                if cached and failure.stale_ok:
                    self.metrics.proxy_stale.labels(upstream.name).inc()
                    log.warning(
                        "serving a cached tag stale",
                        extra={"upstream": upstream.name, "repository": route.name, "tag": tag},
                    )
                    return True
                raise failure.error from None
        return False

    async def _revalidate(
        self, route: Route, tag: str, record: TagRecord, ctx: RequestContext
    ) -> None:
        upstream = route.upstream
        head = await asyncio.wait_for(
            upstream.client.head_manifest(route.remote, tag), upstream.timeout
        )
        if head is None:
            raise OCIError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"upstream {upstream.name} has no manifest {route.remote}:{tag} any more",
                detail={"tag": tag},
            )
        if head.digest == record.digest:
            self.metrics.proxy_revalidations.labels(upstream.name, "unchanged").inc()
            await self.records.put_tag(
                route.name, tag, replace(record, upstream=upstream.name, fetched_at=time.time())
            )
            return
        self.metrics.proxy_revalidations.labels(upstream.name, "changed").inc()
        digest = Digest.parse(head.digest)
        fetched: UpstreamManifest | None
        if await self._has_manifest(route.name, digest):
            local = await self.services.manifests.load(digest)
            fetched = UpstreamManifest(str(digest), local.media_type, local.data)
        else:
            fetched = await self._fetch_manifest(route, head.digest)
            if fetched is None:
                raise OCIError(
                    ErrorCode.MANIFEST_UNKNOWN,
                    f"upstream {upstream.name} lost manifest {route.remote}@{digest}",
                    detail={"tag": tag},
                )
        await self._store_manifest(route, tag, fetched, ctx)

    async def _fetch_manifest(self, route: Route, reference: str) -> UpstreamManifest | None:
        upstream = route.upstream
        try:
            fetched = await asyncio.wait_for(
                upstream.client.get_manifest(route.remote, reference), upstream.timeout
            )
        except ValueError as exc:
            # The client's refusal of a manifest over 4 MiB (or one it cannot read).
            raise UpstreamContentError(str(exc)) from None
        if fetched is not None:
            self.metrics.proxy_upstream_bytes.labels(upstream.name).inc(len(fetched.data))
        return fetched

    async def _store_manifest(
        self, route: Route, reference: str, fetched: UpstreamManifest, ctx: RequestContext
    ) -> None:
        """Into storage through the manifest service; a tag gets its fetch record."""
        try:
            result = await self.services.manifests.put(
                route.name, reference, fetched.data, fetched.media_type, ctx, from_upstream=True
            )
        except OCIError as error:
            log.error(
                "upstream manifest refused",
                extra={
                    "upstream": route.upstream.name,
                    "repository": route.remote,
                    "reference": reference,
                    "error": error.message or error.error.code,
                },
            )
            raise OCIError(
                error.error,
                f"upstream {route.upstream.name} sent a manifest this registry cannot keep: "
                f"{error.message or error.error.default_message}",
            ) from None
        await self.services.events.emit(
            RegistryEvent(
                Action.FILL,
                route.name,
                str(result.digest),
                fetched.media_type,
                len(fetched.data),
                tag="" if is_digest(reference) else reference,
                upstream=route.upstream.name,
                context=ctx,
            )
        )
        now = time.time()
        await self.records.filled(
            result.digest,
            ContentRecord(route.upstream.name, route.name, MANIFEST, len(fetched.data), now),
        )
        if not is_digest(reference):
            await self.records.put_tag(
                route.name, reference, TagRecord(str(result.digest), route.upstream.name, now)
            )

    # -- listings -------------------------------------------------------------------------

    async def tags(
        self, name: str, n: int | None, last: str | None, namespace: str | None = None
    ) -> ServedTags:
        """The upstream's tags (it is the truth); the cached ones, stale, while it fails."""
        repositories = self.services.repositories
        route = self.router.route(name, namespace)
        if route is None:
            return ServedTags(await repositories.tags(name, n, last))
        upstream = route.upstream
        what = f"tags of {route.remote}"
        try:
            tags = await asyncio.wait_for(upstream.client.list_tags(route.remote), upstream.timeout)
        except Exception as exc:
            failure = self._failure(route, what, exc, ErrorCode.NAME_UNKNOWN)
            if failure.stale_ok and await repositories.exists(route.name):
                self.metrics.proxy_stale.labels(upstream.name).inc()
                return ServedTags(await repositories.tags(route.name, n, last), STALE_WARNING)
            raise failure.error from None
        if not tags and not await repositories.exists(route.name):
            # The client takes a 404 as no tags: with nothing cached either, the name is unknown.
            raise OCIError(
                ErrorCode.NAME_UNKNOWN,
                f"upstream {upstream.name} has no repository {route.remote}",
                detail={"name": name},
            )
        return ServedTags(paginate(tags, n, last, None))

    async def referrers(
        self,
        name: str,
        subject: Digest,
        artifact_type: str | None,
        namespace: str | None = None,
    ) -> ServedReferrers:
        """The upstream's referrers of ``subject`` (its API or its tag schema index); the cached
        ones, stale, while it fails. A client pulls each listed referrer by digest as usual."""
        manifests = self.services.manifests
        route = self.router.route(name, namespace)
        if route is None:
            return ServedReferrers(await manifests.referrers(name, subject, artifact_type))
        upstream = route.upstream
        what = f"referrers of {route.remote}@{subject}"
        try:
            descriptors = await asyncio.wait_for(
                upstream.client.referrers(route.remote, str(subject), artifact_type),
                upstream.timeout,
            )
        except Exception as exc:
            failure = self._failure(route, what, exc, ErrorCode.MANIFEST_UNKNOWN)
            if not failure.stale_ok:
                raise failure.error from None
            self.metrics.proxy_stale.labels(upstream.name).inc()
            cached = await manifests.referrers(route.name, subject, artifact_type)
            return ServedReferrers(cached, STALE_WARNING)
        return ServedReferrers(descriptors)

    # -- blobs --------------------------------------------------------------------------

    async def blob_info(self, name: str, digest: Digest, namespace: str | None = None) -> BlobInfo:
        """HEAD: the stored blob, else its size as the upstream says (nothing is fetched)."""
        blobs = self.services.blobs
        route = self.router.route(name, namespace)
        if route is None:
            return await blobs.stat(name, digest)
        if await blobs.exists_in(route.name, digest):
            return await blobs.stat(route.name, digest)
        fill = self._fills.get(self._blob_key(route, digest))
        if fill is not None and fill.size is not None:
            return BlobInfo(digest, fill.size, None)
        what = f"blob {route.remote}@{digest}"
        try:
            size = await asyncio.wait_for(
                route.upstream.client.blob_size(route.remote, str(digest)), route.upstream.timeout
            )
        except Exception as exc:
            raise self._failure(route, what, exc, ErrorCode.BLOB_UNKNOWN).error from None
        if size is None:
            raise OCIError(ErrorCode.BLOB_UNKNOWN, f"upstream {route.upstream.name} has no {what}")
        return BlobInfo(digest, size, None)

    async def blob(
        self, name: str, digest: Digest, ctx: RequestContext, namespace: str | None = None
    ) -> BlobInfo | BlobStream:
        """GET: the stored blob, or a stream of it from the upstream as it is filled."""
        blobs = self.services.blobs
        route = self.router.route(name, namespace)
        if route is None:
            return await blobs.stat(name, digest)
        upstream = route.upstream.name
        if await blobs.exists_in(route.name, digest):
            self.metrics.proxy_hits.labels(upstream, BLOB).inc()
            self.usage.content(digest)
            return await blobs.stat(route.name, digest)
        key = self._blob_key(route, digest)
        fill = self._fills.get(key)
        if fill is not None:
            self.metrics.proxy_singleflight_waits.labels(upstream, BLOB).inc()
        else:
            fill = self._fills[key] = BlobFill(self.spool_dir / f"{os.getpid()}-{uuid.uuid4().hex}")
            task = asyncio.create_task(self._fill_blob(key, route, digest, fill, ctx))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        state = await fill.ready()
        if state is FillState.DONE:
            return await blobs.stat(route.name, digest)

        def stored(offset: int, length: int | None) -> AsyncIterator[bytes]:
            return blobs.read(digest, offset, length)

        def read(first: int, last: int | None) -> AsyncIterator[bytes]:
            return fill.chunks(stored, first, last)

        return BlobStream(digest, fill.size, read)

    @staticmethod
    def _blob_key(route: Route, digest: Digest) -> str:
        return f"blob {route.upstream.name} {route.remote}@{digest}"

    async def _fill_blob(
        self, key: str, route: Route, digest: Digest, fill: BlobFill, ctx: RequestContext
    ) -> None:
        upstream = route.upstream
        blobs = self.services.blobs
        what = f"blob {route.remote}@{digest}"
        try:
            async with self.flights.hold(key) as waited:
                if waited:
                    self.metrics.proxy_singleflight_waits.labels(upstream.name, BLOB).inc()
                if await blobs.exists_in(route.name, digest):
                    # Another worker filled it meanwhile.
                    await fill.done((await blobs.stat(route.name, digest)).size)
                    return
                if await self._link_shared(route, digest):
                    self.metrics.proxy_hits.labels(upstream.name, BLOB).inc()
                    await fill.done((await blobs.stat(route.name, digest)).size)
                    return
                self.metrics.proxy_misses.labels(upstream.name, BLOB).inc()
                size = await self._download(route, digest, fill, ctx)
                await self.records.filled(
                    digest, ContentRecord(upstream.name, route.name, BLOB, size, time.time())
                )
                await fill.done(size)
        except asyncio.CancelledError:
            await fill.failed(OCIError(ErrorCode.UNAVAILABLE, "the registry is stopping"))
            raise
        except Exception as exc:
            await fill.failed(self._failure(route, what, exc, ErrorCode.BLOB_UNKNOWN).error)
        finally:
            self._fills.pop(key, None)
            with contextlib.suppress(FileNotFoundError):
                fill.spool.unlink()

    async def _link_shared(self, route: Route, digest: Digest) -> bool:
        """Content stored already (another repository has it): link it here once the upstream
        confirms this repository has it too, without downloading it again."""
        if await self.services.driver.stat(paths.blob_data(digest)) is None:
            return False
        try:
            size = await asyncio.wait_for(
                route.upstream.client.blob_size(route.remote, str(digest)), route.upstream.timeout
            )
        except Exception:
            return False
        if size is None:
            return False
        await self.services.blobs.link(route.name, digest)
        return True

    async def _download(
        self, route: Route, digest: Digest, fill: BlobFill, ctx: RequestContext
    ) -> int:
        """Stream the blob into an upload session and the spool; commit once it checks out."""
        uploads = self.services.uploads
        async with route.upstream.client.open_blob(route.remote, str(digest)) as response:
            if response.status != 200:
                raise UpstreamContentError(f"answered a whole-blob GET with {response.status}")
            length = response.headers.get("Content-Length")
            session = await uploads.start(route.name)
            fd = os.open(fill.spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                await fill.streaming(int(length) if length and length.isdigit() else None)
                body = self._tee(response, fill, fd, route.upstream.name)
                await uploads.append(route.name, session.upload_id, body)
                info = await uploads.complete(
                    route.name, session.upload_id, digest, None, ctx, quiet=True
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await uploads.cancel(route.name, session.upload_id)
                raise
            finally:
                os.close(fd)
        return info.size

    async def _tee(
        self, response: aiohttp.ClientResponse, fill: BlobFill, fd: int, upstream: str
    ) -> AsyncIterator[bytes]:
        received = self.metrics.proxy_upstream_bytes.labels(upstream)
        async for chunk in response.content.iter_chunked(TEE_CHUNK):
            await asyncio.to_thread(_write_all, fd, chunk)
            await fill.wrote(len(chunk))
            received.inc(len(chunk))
            yield chunk

    # -- failures -----------------------------------------------------------------------

    def _failure(self, route: Route, what: str, exc: BaseException, unknown: ErrorCode) -> Failure:
        if isinstance(exc, OCIError) and exc.error is ErrorCode.DIGEST_INVALID:
            # The upload's check of the filled bytes: the upstream sent other content.
            exc = UpstreamContentError(f"the bytes do not match {what.rpartition('@')[2]}")
        failure = classify(exc, route.upstream.name, what, unknown)
        self.metrics.proxy_upstream_errors.labels(route.upstream.name, failure.reason).inc()
        extra = {
            "upstream": route.upstream.name,
            "url": route.upstream.url,
            "repository": route.remote,
            "what": what,
            "reason": failure.reason,
            "error": str(exc),
        }
        if failure.reason == "bad_content":
            log.error("upstream sent bad content; refused, nothing stored", extra=extra)
        elif failure.reason != "not_found":
            log.warning("upstream request failed", extra=extra)
        return failure


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_orphan_spools(directory: Path) -> None:
    """Spools of processes that are gone (a crash mid-fill); a live worker's stay."""
    for path in directory.iterdir():
        pid = path.name.partition("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        except PermissionError:
            pass
