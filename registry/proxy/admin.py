"""What the cache's admin API asks of it: upstream health and counters, cached repositories,
purges and warming. The gRPC servicer (registry/admin/cache.py) only converts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from nimbus.oci import mediatypes as mt
from nimbus.oci.documents import ManifestDocument, Platform, read_manifest
from nimbus.oci.errors import RegistryError
from registry.context import RequestContext
from registry.errors import ErrorCode, OCIError
from registry.proxy.lifecycle import SweepReport
from registry.proxy.pulls import BlobStream
from registry.proxy.service import BLOB, MANIFEST, ProxyService
from registry.proxy.upstreams import Upstream
from registry.reference import Digest, is_digest, validate_name
from registry.storage import paths, walk

HEALTH_TIMEOUT = 5.0
ACCEPT = sorted(mt.MANIFESTS)
# A blob's progress is reported at least this often (bytes).
PROGRESS_BYTES = 8 << 20


@dataclass(frozen=True)
class UpstreamCounts:
    manifest_hits: int = 0
    manifest_misses: int = 0
    blob_hits: int = 0
    blob_misses: int = 0
    bytes_from_upstream: int = 0
    errors: int = 0
    stale_served: int = 0
    revalidations: int = 0


@dataclass(frozen=True)
class UpstreamStatus:
    upstream: Upstream
    is_default: bool
    reachable: bool
    latency: float
    error: str
    counts: UpstreamCounts


@dataclass(frozen=True)
class CachedRepository:
    name: str
    upstream: str
    remote: str
    tags: int
    manifests: int
    blobs: int
    size: int
    last_pulled: float  # 0: none recorded


@dataclass(frozen=True)
class WarmStep:
    kind: str  # "manifest" or "blob"
    digest: str
    size: int
    bytes_done: int
    already_cached: bool
    items_done: int
    items_total: int
    bytes_fetched: int
    message: str
    done: bool = False


class CacheAdmin:
    def __init__(self, proxy: ProxyService) -> None:
        self.proxy = proxy
        self.driver = proxy.services.driver

    # -- upstreams ----------------------------------------------------------------------

    async def upstreams(self) -> list[UpstreamStatus]:
        router = self.proxy.router
        default = router.default
        checks = await asyncio.gather(*(self._check(u) for u in router.upstreams))
        return [
            UpstreamStatus(u, u is default, ok, latency, error, self._counts(u.name))
            for u, (ok, latency, error) in zip(router.upstreams, checks, strict=True)
        ]

    @staticmethod
    async def _check(upstream: Upstream) -> tuple[bool, float, str]:
        started = time.monotonic()
        try:
            await asyncio.wait_for(upstream.client.ping(), min(upstream.timeout, HEALTH_TIMEOUT))
        except RegistryError as exc:
            if exc.status == 401:  # it serves; the cache authenticates per repository
                return True, time.monotonic() - started, ""
            return False, time.monotonic() - started, f"HTTP {exc.status}: {exc.message}"
        except TimeoutError:
            return False, time.monotonic() - started, "no answer in time"
        except Exception as exc:
            return False, time.monotonic() - started, str(exc) or type(exc).__name__
        return True, time.monotonic() - started, ""

    def _counts(self, upstream: str) -> UpstreamCounts:
        registry = self.proxy.metrics.registry

        def value(name: str, **labels: str) -> int:
            found = registry.get_sample_value(name, {"upstream": upstream, **labels})
            return int(found or 0)

        def total(name: str) -> int:
            return int(
                sum(
                    sample.value
                    for metric in registry.collect()
                    for sample in metric.samples
                    if sample.name == name and sample.labels.get("upstream") == upstream
                )
            )

        return UpstreamCounts(
            manifest_hits=value("nimbus_proxy_hits_total", kind=MANIFEST),
            manifest_misses=value("nimbus_proxy_misses_total", kind=MANIFEST),
            blob_hits=value("nimbus_proxy_hits_total", kind=BLOB),
            blob_misses=value("nimbus_proxy_misses_total", kind=BLOB),
            bytes_from_upstream=value("nimbus_proxy_upstream_bytes_total"),
            errors=total("nimbus_proxy_upstream_errors_total"),
            stale_served=value("nimbus_proxy_stale_served_total"),
            revalidations=total("nimbus_proxy_revalidations_total"),
        )

    @property
    def cached_bytes(self) -> int:
        value = self.proxy.metrics.registry.get_sample_value("nimbus_proxy_cached_bytes")
        return int(value or 0)

    # -- repositories -------------------------------------------------------------------

    async def repositories(self, upstream: str = "") -> list[CachedRepository]:
        last: dict[str, float] = {}
        async for name, _, record in self.proxy.records.tags():
            last[name] = max(last.get(name, 0.0), record.used_at)
        found = []
        for name in await walk.repositories(self.driver):
            route = self.proxy.router.route(name)
            if route is None or (upstream and route.upstream.name != upstream):
                continue
            layers = await walk.layers(self.driver, name)
            revisions = await walk.revisions(self.driver, name)
            size = 0
            for digest in {*layers, *revisions}:
                info = await self.driver.stat(paths.blob_data(digest))
                size += info.size if info is not None else 0
            found.append(
                CachedRepository(
                    name,
                    route.upstream.name,
                    route.remote,
                    len(await walk.tags(self.driver, name)),
                    len(revisions),
                    len(layers),
                    size,
                    last.get(name, 0.0),
                )
            )
        return found

    # -- purges -------------------------------------------------------------------------

    async def purge(self, name: str, tag: str = "") -> SweepReport:
        validate_name(name)
        report = await self.proxy.lifecycle.purge(name, tag)
        self.proxy.count_removals(report)
        return report

    # -- warming ------------------------------------------------------------------------

    async def warm(
        self, reference: str, platforms: Sequence[str], ctx: RequestContext
    ) -> AsyncIterator[WarmStep]:
        name, ref = _split(reference)
        if self.proxy.router.route(name) is None:
            raise OCIError(
                ErrorCode.DENIED, f"{name} is no cached repository: no upstream serves it"
            )
        wanted = [_platform(p) for p in platforms]
        progress = _Progress()
        pending: list[str] = [ref]
        progress.total = 1
        blobs: dict[str, int] = {}
        while pending:
            current = pending.pop(0)
            cached = await self._cached_manifest(name, current)
            served = await self.proxy.manifest(name, current, ACCEPT, ctx, count_pull=False)
            manifest = served.manifest
            if not cached:
                progress.fetched += manifest.size
            progress.done += 1
            document = read_manifest(manifest.data)
            for child in _children(document, wanted):
                if child not in pending:
                    pending.append(child)
                    progress.total += 1
            for blob in document.distributable_blobs():
                if blob.digest not in blobs:
                    blobs[blob.digest] = blob.size
                    progress.total += 1
            yield progress.step(
                MANIFEST, str(manifest.digest), manifest.size, manifest.size, cached
            )
        for digest, size in blobs.items():
            async for step in self._warm_blob(name, Digest.parse(digest), size, progress, ctx):
                yield step
        yield progress.step(
            "", "", 0, 0, False, f"{reference} cached: {progress.done} items", done=True
        )

    async def _cached_manifest(self, name: str, reference: str) -> bool:
        """Whether the manifest is held already (a tag: its last fetched digest)."""
        if is_digest(reference):
            return await self.proxy.has_manifest(name, Digest.parse(reference))
        record = await self.proxy.records.tag(name, reference)
        return record is not None and await self.proxy.has_manifest(
            name, Digest.parse(record.digest)
        )

    async def _warm_blob(
        self, name: str, digest: Digest, size: int, progress: _Progress, ctx: RequestContext
    ) -> AsyncIterator[WarmStep]:
        got = await self.proxy.blob(name, digest, ctx)
        if not isinstance(got, BlobStream):
            progress.done += 1
            yield progress.step(BLOB, str(digest), got.size, got.size, True)
            return
        read = reported = 0
        async for chunk in got.chunks():
            read += len(chunk)
            progress.fetched += len(chunk)
            if read - reported >= PROGRESS_BYTES:
                reported = read
                yield progress.step(BLOB, str(digest), size, read, False)
        progress.done += 1
        yield progress.step(BLOB, str(digest), size, read, False)


@dataclass
class _Progress:
    done: int = 0
    total: int = 0
    fetched: int = 0

    def step(
        self,
        kind: str,
        digest: str,
        size: int,
        bytes_done: int,
        cached: bool,
        message: str = "",
        done: bool = False,
    ) -> WarmStep:
        if not message and kind:
            verb = "cached already" if cached else ("fetched" if bytes_done >= size else "fetching")
            message = f"{kind} {digest} {verb}"
        return WarmStep(
            kind,
            digest,
            size,
            bytes_done,
            cached,
            self.done,
            self.total,
            self.fetched,
            message,
            done,
        )


def _split(reference: str) -> tuple[str, str]:
    """`name:tag` or `name@digest` (a tag is the part after the last `:` past the last `/`)."""
    if "@" in reference:
        name, _, digest = reference.partition("@")
        if not is_digest(digest):
            raise OCIError(ErrorCode.DIGEST_INVALID, f"{digest!r} is not a digest")
        return validate_name(name), digest
    head, _, last = reference.rpartition("/")
    if ":" in last:
        component, _, tag = last.partition(":")
        return validate_name(f"{head}/{component}" if head else component), tag
    return validate_name(reference), "latest"


def _platform(text: str) -> Platform:
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise OCIError(ErrorCode.UNSUPPORTED, f"platform {text!r}: os/architecture[/variant]")
    return Platform(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) > 2 else "")


def _children(document: ManifestDocument, wanted: list[Platform]) -> list[str]:
    found = []
    for child in document.manifests:
        if child.media_type and child.media_type not in mt.MANIFESTS:
            continue
        platform = child.platform
        if wanted and not any(
            platform is not None
            and platform.os == p.os
            and platform.architecture == p.architecture
            and (not p.variant or platform.variant == p.variant)
            for p in wanted
        ):
            continue
        found.append(child.digest)
    return found
