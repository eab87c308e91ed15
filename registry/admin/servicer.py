"""`nimbus.v1.Registry`: each call validates its request, calls a service, converts the answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

from nimbus.grpcserver import ServiceSpec
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc as pb_grpc
from registry.admin import messages
from registry.context import RequestContext
from registry.errors import ErrorCode, OCIError
from registry.reference import Digest, validate_name, validate_tag
from registry.services import Services
from registry.services.gc import CollectionAborted, CollectionRunning, GarbageCollector
from registry.services.inventory import InventoryService

SERVICE_NAME = "nimbus.v1.Registry"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_STATUS = {
    ErrorCode.NAME_UNKNOWN: grpc.StatusCode.NOT_FOUND,
    ErrorCode.MANIFEST_UNKNOWN: grpc.StatusCode.NOT_FOUND,
    ErrorCode.BLOB_UNKNOWN: grpc.StatusCode.NOT_FOUND,
    ErrorCode.NAME_INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.TAG_INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.DIGEST_INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.PAGINATION_NUMBER_INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


async def _abort(context: grpc.aio.ServicerContext, error: OCIError) -> NoReturn:
    code = _STATUS.get(error.error, grpc.StatusCode.FAILED_PRECONDITION)
    detail = ""
    if isinstance(error.detail, dict) and error.detail:
        detail = " (" + ", ".join(f"{k}={v}" for k, v in error.detail.items()) + ")"
    await context.abort(code, f"{error.message or error.error.default_message}{detail}")
    raise AssertionError("unreachable")  # context.abort raises


def _page_size(value: int) -> int:
    if value < 0:
        raise OCIError(ErrorCode.PAGINATION_NUMBER_INVALID, "page_size must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _request_context(context: grpc.aio.ServicerContext) -> RequestContext:
    metadata = dict(context.invocation_metadata() or ())
    return RequestContext(
        request_id=uuid.uuid4().hex,
        addr=str(context.peer() or ""),
        method="DELETE",
        useragent=str(metadata.get("user-agent", "")),
        actor="admin",
    )


def _seconds(message: Any, field: str) -> float | None:
    if not message.HasField(field):
        return None
    seconds: float = getattr(message, field).ToTimedelta().total_seconds()
    if seconds < 0:
        raise OCIError(ErrorCode.PAGINATION_NUMBER_INVALID, f"{field} must not be negative")
    return seconds


class RegistryAdmin(pb_grpc.RegistryServicer):  # type: ignore[misc]
    def __init__(self, services: Services, gc: GarbageCollector) -> None:
        self.services = services
        self.gc = gc
        self.inventory = InventoryService(
            services.driver, services.repositories, services.manifests
        )

    async def ListRepositories(
        self, request: pb.ListRepositoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRepositoriesResponse:
        try:
            items, next_token = await self.inventory.summaries(
                _page_size(request.page_size), request.page_token
            )
        except OCIError as error:
            await _abort(context, error)
        return pb.ListRepositoriesResponse(
            repositories=[messages.repository(i) for i in items], next_page_token=next_token
        )

    async def ListTags(
        self, request: pb.ListTagsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTagsResponse:
        try:
            items, next_token = await self.inventory.tags(
                request.repository, _page_size(request.page_size), request.page_token
            )
        except OCIError as error:
            await _abort(context, error)
        return pb.ListTagsResponse(
            repository=request.repository,
            tags=[messages.tag(i) for i in items],
            next_page_token=next_token,
        )

    async def GetManifest(
        self, request: pb.GetManifestRequest, context: grpc.aio.ServicerContext
    ) -> pb.ManifestInfo:
        try:
            details = await self.inventory.manifest(request.repository, request.reference)
        except OCIError as error:
            await _abort(context, error)
        return messages.manifest(details)

    async def DeleteTag(
        self, request: pb.DeleteTagRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTagResponse:
        manifests = self.services.manifests
        try:
            validate_name(request.repository)
            validate_tag(request.tag)
            digest = await manifests.resolve(request.repository, request.tag)
            await manifests.delete(request.repository, request.tag, _request_context(context))
        except OCIError as error:
            await _abort(context, error)
        return pb.DeleteTagResponse(digest=str(digest))

    async def DeleteManifest(
        self, request: pb.DeleteManifestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteManifestResponse:
        manifests = self.services.manifests
        try:
            validate_name(request.repository)
            digest = Digest.parse(request.digest)
            await manifests.resolve(request.repository, str(digest))
            tags = await manifests.tags_of(request.repository, digest)
            await manifests.delete(request.repository, str(digest), _request_context(context))
        except OCIError as error:
            await _abort(context, error)
        return pb.DeleteManifestResponse(digest=str(digest), removed_tags=sorted(tags))

    async def GarbageCollect(
        self, request: pb.GarbageCollectRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GarbageCollectProgress]:
        try:
            options = self.gc.options(
                dry_run=request.dry_run,
                delete_untagged=request.delete_untagged,
                grace_seconds=_seconds(request, "grace_period"),
                upload_max_age_seconds=_seconds(request, "upload_max_age"),
            )
        except OCIError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
        try:
            async for progress in self.gc.run_detached(options):
                yield messages.gc_progress(progress)
        except CollectionRunning as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except CollectionAborted as error:
            await context.abort(grpc.StatusCode.ABORTED, str(error))

    async def GetStats(
        self, request: pb.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegistryStats:
        return messages.stats(await self.inventory.stats(), self.gc.last)


def registry_service(
    services: Services, grace_seconds: float, upload_max_age_seconds: float
) -> ServiceSpec:
    """The `nimbus.v1.Registry` service over `services`, for `start_grpc_server`."""
    gc = GarbageCollector(
        services.driver,
        services.repositories,
        services.manifests,
        grace_seconds=grace_seconds,
        upload_max_age_seconds=upload_max_age_seconds,
    )
    return (pb_grpc.add_RegistryServicer_to_server, RegistryAdmin(services, gc), SERVICE_NAME)
