"""`nimbus.v1.Registry`: each call validates its request, calls a service, converts the answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from nimbus.grpcerrors import Context, error_mapper, stream_error_mapper
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc as pb_grpc
from registry.admin import lifecycle as lifecycle_messages
from registry.admin import messages
from registry.auth.access import AccessPolicy
from registry.context import RequestContext
from registry.errors import ErrorCode, OCIError
from registry.lifecycle import Lifecycle
from registry.lifecycle.lease import LeaseHeld
from registry.lifecycle.retention import UnknownRule
from registry.lifecycle.store import PolicyConflict
from registry.lifecycle.values import PolicyError
from registry.reference import Digest, validate_name, validate_tag
from registry.services.gc import CollectionAborted, CollectionRunning, GarbageCollector
from registry.services.inventory import InventoryService, RepositoryQuery
from registry.services.manifests import ManifestService

SERVICE_NAME = "nimbus.v1.Registry"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_OCI_STATUS = {
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


def _oci_status(error: OCIError) -> grpc.StatusCode:
    return _OCI_STATUS.get(error.error, grpc.StatusCode.FAILED_PRECONDITION)


_CODES = [
    (OCIError, _oci_status),
    (CollectionRunning, grpc.StatusCode.FAILED_PRECONDITION),
    (CollectionAborted, grpc.StatusCode.ABORTED),
    (PolicyError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownRule, grpc.StatusCode.INVALID_ARGUMENT),
    (PolicyConflict, grpc.StatusCode.ABORTED),
    (LeaseHeld, grpc.StatusCode.FAILED_PRECONDITION),
]


def _message(error: Exception) -> str:
    if isinstance(error, OCIError):
        detail = ""
        if isinstance(error.detail, dict) and error.detail:
            detail = " (" + ", ".join(f"{k}={v}" for k, v in error.detail.items()) + ")"
        return f"{error.message or error.error.default_message}{detail}"
    return str(error) or type(error).__name__


_mapped = error_mapper(_CODES, _message)
_mapped_stream = stream_error_mapper(_CODES, _message)


def _page_size(value: int) -> int:
    if value < 0:
        raise OCIError(ErrorCode.PAGINATION_NUMBER_INVALID, "page_size must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _request_context(context: Context) -> RequestContext:
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
    def __init__(
        self,
        manifests: ManifestService,
        inventory: InventoryService,
        gc: GarbageCollector,
        policy: AccessPolicy | None = None,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        self.manifests = manifests
        self.inventory = inventory
        self.gc = gc
        # The OCI API's access rules; None when it runs without authentication.
        self.policy = policy
        # Immutable tags, quotas and retention; None when not installed (no rules apply).
        self.lifecycle = lifecycle

    def _visible(self, request: Any) -> Callable[[str], bool] | None:
        """What `pullable_by` lets through: None for everything."""
        if self.policy is None or not request.HasField("pullable_by"):
            return None
        policy, user = self.policy, request.pullable_by or None
        return lambda name: policy.permits(user, name, ("pull",))

    def _require_pullable(self, request: Any) -> None:
        visible = self._visible(request)
        if visible is not None and not visible(request.repository):
            # As for a repository that does not exist: no hint that it does.
            raise OCIError(ErrorCode.NAME_UNKNOWN, detail={"name": request.repository})

    @_mapped
    async def ListRepositories(
        self, request: pb.ListRepositoriesRequest, context: Context
    ) -> pb.ListRepositoriesResponse:
        query = RepositoryQuery(request.query, request.order_by, self._visible(request))
        items, next_token, total = await self.inventory.summaries(
            _page_size(request.page_size), request.page_token, query
        )
        return pb.ListRepositoriesResponse(
            repositories=[messages.repository(i) for i in items],
            next_page_token=next_token,
            total=total,
        )

    @_mapped
    async def ListTags(self, request: pb.ListTagsRequest, context: Context) -> pb.ListTagsResponse:
        self._require_pullable(request)
        items, next_token = await self.inventory.tags(
            request.repository, _page_size(request.page_size), request.page_token
        )
        return pb.ListTagsResponse(
            repository=request.repository,
            tags=[messages.tag(i) for i in items],
            next_page_token=next_token,
        )

    @_mapped
    async def GetManifest(
        self, request: pb.GetManifestRequest, context: Context
    ) -> pb.ManifestInfo:
        self._require_pullable(request)
        return messages.manifest(
            await self.inventory.manifest(request.repository, request.reference)
        )

    @_mapped
    async def DeleteTag(
        self, request: pb.DeleteTagRequest, context: Context
    ) -> pb.DeleteTagResponse:
        validate_name(request.repository)
        validate_tag(request.tag)
        digest = await self.manifests.resolve(request.repository, request.tag)
        await self.manifests.delete(request.repository, request.tag, _request_context(context))
        return pb.DeleteTagResponse(digest=str(digest))

    @_mapped
    async def DeleteManifest(
        self, request: pb.DeleteManifestRequest, context: Context
    ) -> pb.DeleteManifestResponse:
        validate_name(request.repository)
        digest = Digest.parse(request.digest)
        await self.manifests.resolve(request.repository, str(digest))
        tags = await self.manifests.tags_of(request.repository, digest)
        await self.manifests.delete(request.repository, str(digest), _request_context(context))
        return pb.DeleteManifestResponse(digest=str(digest), removed_tags=sorted(tags))

    @_mapped_stream
    async def GarbageCollect(
        self, request: pb.GarbageCollectRequest, context: Context
    ) -> AsyncIterator[pb.GarbageCollectProgress]:
        options = self.gc.options(
            dry_run=request.dry_run,
            delete_untagged=request.delete_untagged,
            grace_seconds=_seconds(request, "grace_period"),
            upload_max_age_seconds=_seconds(request, "upload_max_age"),
        )
        async for progress in self.gc.run_detached(options):
            yield messages.gc_progress(progress)

    @_mapped
    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.RegistryStats:
        stats = messages.stats(await self.inventory.stats(), self.gc.last)
        if self.lifecycle is not None:
            names = await self.inventory.repositories.all_repositories()
            for usage in await self.lifecycle.quota_usage(names):
                stats.quotas.append(lifecycle_messages.quota_usage(usage))
        return stats

    def _lifecycle(self) -> Lifecycle:
        if self.lifecycle is None:
            raise OCIError(ErrorCode.UNSUPPORTED, "the lifecycle rules are not available here")
        return self.lifecycle

    @_mapped
    async def GetLifecyclePolicies(
        self, request: pb.GetLifecyclePoliciesRequest, context: Context
    ) -> pb.LifecyclePolicies:
        stored = await self._lifecycle().store.document(fresh=True)
        return lifecycle_messages.policies(stored)

    @_mapped
    async def SetLifecyclePolicies(
        self, request: pb.SetLifecyclePoliciesRequest, context: Context
    ) -> pb.LifecyclePolicies:
        policies = lifecycle_messages.parse_policies(request.policies)
        stored = await self._lifecycle().store.replace(policies, request.expected_revision)
        return lifecycle_messages.policies(stored)

    @_mapped_stream
    async def RunRetention(
        self, request: pb.RunRetentionRequest, context: Context
    ) -> AsyncIterator[pb.RetentionProgress]:
        retention = self._lifecycle().retention
        if retention is None:
            raise OCIError(ErrorCode.UNSUPPORTED, "retention is not available here")
        async for progress in retention.run_detached(request.dry_run, list(request.rules)):
            yield lifecycle_messages.retention_progress(progress)

    @_mapped_stream
    async def RunScrub(
        self, request: pb.RunScrubRequest, context: Context
    ) -> AsyncIterator[pb.ScrubProgress]:
        scrub = self._lifecycle().scrub
        if scrub is None:
            raise OCIError(ErrorCode.UNSUPPORTED, "the scrub is not available here")
        if request.rate < 0:
            raise PolicyError(f"rate: 0 (the configured one) or more bytes/s, got {request.rate}")
        rate = 0 if request.unlimited else (request.rate or None)
        async for progress in scrub.run_detached(request.dry_run, rate):
            yield lifecycle_messages.scrub_progress(progress)
