"""`nimbus.v1.Cache`: each call validates its request, asks the cache, converts the answer.

Served whether or not upstreams are configured; without them every call is FAILED_PRECONDITION
(and the cache's modules are never imported).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from nimbus.grpcerrors import Context, error_mapper, stream_error_mapper
from proto.nimbus.v1 import cache_pb2 as pb
from proto.nimbus.v1 import cache_pb2_grpc as pb_grpc
from registry.admin.servicer import _message, _oci_status
from registry.context import RequestContext
from registry.errors import ErrorCode, OCIError

if TYPE_CHECKING:
    from registry.proxy.admin import CacheAdmin, UpstreamStatus, WarmStep

SERVICE_NAME = "nimbus.v1.Cache"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class NoCache(Exception):
    """The registry has no upstreams configured."""


def _status(error: OCIError) -> grpc.StatusCode:
    if error.error is ErrorCode.DENIED:
        return grpc.StatusCode.FAILED_PRECONDITION
    return _oci_status(error)


_CODES = [(OCIError, _status), (NoCache, grpc.StatusCode.FAILED_PRECONDITION)]
_mapped = error_mapper(_CODES, _message)
_mapped_stream = stream_error_mapper(_CODES, _message)


def _duration(seconds: float) -> Duration:
    value = Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def _timestamp(seconds: float) -> Timestamp | None:
    if not seconds:
        return None
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def _upstream(status: UpstreamStatus) -> pb.Upstream:
    u, c = status.upstream, status.counts
    return pb.Upstream(
        name=u.name,
        url=u.url,
        prefix=u.prefix,
        is_default=status.is_default,
        tag_ttl=_duration(u.tag_ttl),
        reachable=status.reachable,
        latency=_duration(status.latency),
        error=status.error,
        stats=pb.UpstreamStats(
            manifest_hits=c.manifest_hits,
            manifest_misses=c.manifest_misses,
            blob_hits=c.blob_hits,
            blob_misses=c.blob_misses,
            bytes_from_upstream=c.bytes_from_upstream,
            errors=c.errors,
            stale_served=c.stale_served,
            revalidations=c.revalidations,
        ),
    )


_KINDS = {"manifest": pb.WarmProgress.MANIFEST, "blob": pb.WarmProgress.BLOB}


def _progress(step: WarmStep) -> pb.WarmProgress:
    return pb.WarmProgress(
        kind=_KINDS.get(step.kind, pb.WarmProgress.KIND_UNSPECIFIED),
        digest=step.digest,
        size=step.size,
        bytes_done=step.bytes_done,
        already_cached=step.already_cached,
        items_done=step.items_done,
        items_total=step.items_total,
        bytes_fetched=step.bytes_fetched,
        message=step.message,
        done=step.done,
    )


class CacheService(pb_grpc.CacheServicer):  # type: ignore[misc]
    def __init__(self, admin: CacheAdmin | None, max_bytes: int = 0) -> None:
        self._admin = admin
        self.max_bytes = max_bytes

    @property
    def admin(self) -> CacheAdmin:
        if self._admin is None:
            raise NoCache("this registry has no pull-through cache: proxy.upstreams is empty")
        return self._admin

    @_mapped
    async def ListUpstreams(
        self, request: pb.ListUpstreamsRequest, context: Context
    ) -> pb.ListUpstreamsResponse:
        admin = self.admin
        return pb.ListUpstreamsResponse(
            upstreams=[_upstream(s) for s in await admin.upstreams()],
            cached_bytes=admin.cached_bytes,
            max_bytes=self.max_bytes,
        )

    @_mapped
    async def ListCachedRepositories(
        self, request: pb.ListCachedRepositoriesRequest, context: Context
    ) -> pb.ListCachedRepositoriesResponse:
        admin = self.admin
        if request.page_size < 0:
            raise OCIError(ErrorCode.PAGINATION_NUMBER_INVALID, "page_size must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        items = [
            r for r in await admin.repositories(request.upstream) if r.name > request.page_token
        ]
        page, rest = items[:size], items[size:]
        return pb.ListCachedRepositoriesResponse(
            repositories=[
                pb.CachedRepository(
                    name=r.name,
                    upstream=r.upstream,
                    remote=r.remote,
                    tag_count=r.tags,
                    manifest_count=r.manifests,
                    blob_count=r.blobs,
                    size=r.size,
                    last_pulled=_timestamp(r.last_pulled),
                )
                for r in page
            ],
            next_page_token=page[-1].name if rest else "",
        )

    @_mapped
    async def Purge(self, request: pb.PurgeRequest, context: Context) -> pb.PurgeResponse:
        report = await self.admin.purge(request.repository, request.tag)
        return pb.PurgeResponse(
            tags_removed=report.tags_removed,
            manifests_removed=report.manifests_evicted,
            blobs_removed=report.blobs_evicted,
            bytes_freed=report.bytes_freed,
        )

    @_mapped_stream
    async def Warm(
        self, request: pb.WarmRequest, context: Context
    ) -> AsyncIterator[pb.WarmProgress]:
        admin = self.admin
        metadata = dict(context.invocation_metadata() or ())
        ctx = RequestContext(
            request_id=uuid.uuid4().hex,
            addr=str(context.peer() or ""),
            method="GET",
            useragent=str(metadata.get("user-agent", "")),
            actor="admin",
        )
        async for step in admin.warm(request.reference, list(request.platforms), ctx):
            yield _progress(step)
