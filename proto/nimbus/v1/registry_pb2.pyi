import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListRepositoriesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "query", "order_by", "pullable_by")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PULLABLE_BY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    query: str
    order_by: str
    pullable_by: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., query: _Optional[str] = ..., order_by: _Optional[str] = ..., pullable_by: _Optional[str] = ...) -> None: ...

class Repository(_message.Message):
    __slots__ = ("name", "tag_count", "manifest_count", "size", "last_pushed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAG_COUNT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LAST_PUSHED_FIELD_NUMBER: _ClassVar[int]
    name: str
    tag_count: int
    manifest_count: int
    size: int
    last_pushed: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., tag_count: _Optional[int] = ..., manifest_count: _Optional[int] = ..., size: _Optional[int] = ..., last_pushed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListRepositoriesResponse(_message.Message):
    __slots__ = ("repositories", "next_page_token", "total")
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    repositories: _containers.RepeatedCompositeFieldContainer[Repository]
    next_page_token: str
    total: int
    def __init__(self, repositories: _Optional[_Iterable[_Union[Repository, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class ListTagsRequest(_message.Message):
    __slots__ = ("repository", "page_size", "page_token", "pullable_by")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PULLABLE_BY_FIELD_NUMBER: _ClassVar[int]
    repository: str
    page_size: int
    page_token: str
    pullable_by: str
    def __init__(self, repository: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., pullable_by: _Optional[str] = ...) -> None: ...

class Tag(_message.Message):
    __slots__ = ("name", "digest", "media_type", "size", "updated", "last_pulled")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    LAST_PULLED_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: str
    media_type: str
    size: int
    updated: _timestamp_pb2.Timestamp
    last_pulled: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[str] = ..., media_type: _Optional[str] = ..., size: _Optional[int] = ..., updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_pulled: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListTagsResponse(_message.Message):
    __slots__ = ("repository", "tags", "next_page_token")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    next_page_token: str
    def __init__(self, repository: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("repository", "reference", "pullable_by")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PULLABLE_BY_FIELD_NUMBER: _ClassVar[int]
    repository: str
    reference: str
    pullable_by: str
    def __init__(self, repository: _Optional[str] = ..., reference: _Optional[str] = ..., pullable_by: _Optional[str] = ...) -> None: ...

class Platform(_message.Message):
    __slots__ = ("os", "architecture", "variant", "os_version")
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    OS_VERSION_FIELD_NUMBER: _ClassVar[int]
    os: str
    architecture: str
    variant: str
    os_version: str
    def __init__(self, os: _Optional[str] = ..., architecture: _Optional[str] = ..., variant: _Optional[str] = ..., os_version: _Optional[str] = ...) -> None: ...

class Descriptor(_message.Message):
    __slots__ = ("media_type", "digest", "size", "artifact_type", "annotations", "platform")
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    digest: str
    size: int
    artifact_type: str
    annotations: _containers.ScalarMap[str, str]
    platform: Platform
    def __init__(self, media_type: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., artifact_type: _Optional[str] = ..., annotations: _Optional[_Mapping[str, str]] = ..., platform: _Optional[_Union[Platform, _Mapping]] = ...) -> None: ...

class ManifestInfo(_message.Message):
    __slots__ = ("repository", "digest", "media_type", "size", "total_size", "artifact_type", "tags", "platforms", "config", "layers", "manifests", "referrers", "subject", "annotations")
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    REFERRERS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    media_type: str
    size: int
    total_size: int
    artifact_type: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    platforms: _containers.RepeatedCompositeFieldContainer[Platform]
    config: Descriptor
    layers: _containers.RepeatedCompositeFieldContainer[Descriptor]
    manifests: _containers.RepeatedCompositeFieldContainer[Descriptor]
    referrers: _containers.RepeatedCompositeFieldContainer[Descriptor]
    subject: Descriptor
    annotations: _containers.ScalarMap[str, str]
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., media_type: _Optional[str] = ..., size: _Optional[int] = ..., total_size: _Optional[int] = ..., artifact_type: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., platforms: _Optional[_Iterable[_Union[Platform, _Mapping]]] = ..., config: _Optional[_Union[Descriptor, _Mapping]] = ..., layers: _Optional[_Iterable[_Union[Descriptor, _Mapping]]] = ..., manifests: _Optional[_Iterable[_Union[Descriptor, _Mapping]]] = ..., referrers: _Optional[_Iterable[_Union[Descriptor, _Mapping]]] = ..., subject: _Optional[_Union[Descriptor, _Mapping]] = ..., annotations: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeleteTagRequest(_message.Message):
    __slots__ = ("repository", "tag")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tag: str
    def __init__(self, repository: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class DeleteTagResponse(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...

class DeleteManifestRequest(_message.Message):
    __slots__ = ("repository", "digest")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class DeleteManifestResponse(_message.Message):
    __slots__ = ("digest", "removed_tags")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REMOVED_TAGS_FIELD_NUMBER: _ClassVar[int]
    digest: str
    removed_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, digest: _Optional[str] = ..., removed_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class GarbageCollectRequest(_message.Message):
    __slots__ = ("dry_run", "delete_untagged", "grace_period", "upload_max_age")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    DELETE_UNTAGGED_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    delete_untagged: bool
    grace_period: _duration_pb2.Duration
    upload_max_age: _duration_pb2.Duration
    def __init__(self, dry_run: _Optional[bool] = ..., delete_untagged: _Optional[bool] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., upload_max_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GarbageCollectProgress(_message.Message):
    __slots__ = ("phase", "message", "stats", "item", "dry_run")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[GarbageCollectProgress.Phase]
        MARK: _ClassVar[GarbageCollectProgress.Phase]
        SWEEP_MANIFESTS: _ClassVar[GarbageCollectProgress.Phase]
        SWEEP_BLOBS: _ClassVar[GarbageCollectProgress.Phase]
        SWEEP_UPLOADS: _ClassVar[GarbageCollectProgress.Phase]
        DONE: _ClassVar[GarbageCollectProgress.Phase]
    PHASE_UNSPECIFIED: GarbageCollectProgress.Phase
    MARK: GarbageCollectProgress.Phase
    SWEEP_MANIFESTS: GarbageCollectProgress.Phase
    SWEEP_BLOBS: GarbageCollectProgress.Phase
    SWEEP_UPLOADS: GarbageCollectProgress.Phase
    DONE: GarbageCollectProgress.Phase
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    phase: GarbageCollectProgress.Phase
    message: str
    stats: GarbageCollectStats
    item: GarbageCollectItem
    dry_run: bool
    def __init__(self, phase: _Optional[_Union[GarbageCollectProgress.Phase, str]] = ..., message: _Optional[str] = ..., stats: _Optional[_Union[GarbageCollectStats, _Mapping]] = ..., item: _Optional[_Union[GarbageCollectItem, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class GarbageCollectItem(_message.Message):
    __slots__ = ("kind", "digest", "repository", "upload_id", "size")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[GarbageCollectItem.Kind]
        BLOB: _ClassVar[GarbageCollectItem.Kind]
        MANIFEST: _ClassVar[GarbageCollectItem.Kind]
        UPLOAD: _ClassVar[GarbageCollectItem.Kind]
    KIND_UNSPECIFIED: GarbageCollectItem.Kind
    BLOB: GarbageCollectItem.Kind
    MANIFEST: GarbageCollectItem.Kind
    UPLOAD: GarbageCollectItem.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    kind: GarbageCollectItem.Kind
    digest: str
    repository: str
    upload_id: str
    size: int
    def __init__(self, kind: _Optional[_Union[GarbageCollectItem.Kind, str]] = ..., digest: _Optional[str] = ..., repository: _Optional[str] = ..., upload_id: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class GarbageCollectStats(_message.Message):
    __slots__ = ("repositories", "manifests_marked", "blobs_marked", "blobs_scanned", "blobs_kept_recent", "blobs_deleted", "bytes_freed", "manifests_deleted", "uploads_deleted", "started", "finished")
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_MARKED_FIELD_NUMBER: _ClassVar[int]
    BLOBS_MARKED_FIELD_NUMBER: _ClassVar[int]
    BLOBS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    BLOBS_KEPT_RECENT_FIELD_NUMBER: _ClassVar[int]
    BLOBS_DELETED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_DELETED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    repositories: int
    manifests_marked: int
    blobs_marked: int
    blobs_scanned: int
    blobs_kept_recent: int
    blobs_deleted: int
    bytes_freed: int
    manifests_deleted: int
    uploads_deleted: int
    started: _timestamp_pb2.Timestamp
    finished: _timestamp_pb2.Timestamp
    def __init__(self, repositories: _Optional[int] = ..., manifests_marked: _Optional[int] = ..., blobs_marked: _Optional[int] = ..., blobs_scanned: _Optional[int] = ..., blobs_kept_recent: _Optional[int] = ..., blobs_deleted: _Optional[int] = ..., bytes_freed: _Optional[int] = ..., manifests_deleted: _Optional[int] = ..., uploads_deleted: _Optional[int] = ..., started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegistryStats(_message.Message):
    __slots__ = ("repositories", "tags", "manifests", "blobs", "blob_bytes", "uploads_in_progress", "last_gc", "quotas")
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    BLOB_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_GC_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    repositories: int
    tags: int
    manifests: int
    blobs: int
    blob_bytes: int
    uploads_in_progress: int
    last_gc: GarbageCollectStats
    quotas: _containers.RepeatedCompositeFieldContainer[QuotaUsage]
    def __init__(self, repositories: _Optional[int] = ..., tags: _Optional[int] = ..., manifests: _Optional[int] = ..., blobs: _Optional[int] = ..., blob_bytes: _Optional[int] = ..., uploads_in_progress: _Optional[int] = ..., last_gc: _Optional[_Union[GarbageCollectStats, _Mapping]] = ..., quotas: _Optional[_Iterable[_Union[QuotaUsage, _Mapping]]] = ...) -> None: ...

class QuotaUsage(_message.Message):
    __slots__ = ("repository", "rule", "bytes_used", "bytes_limit", "tags_used", "tags_limit")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    BYTES_USED_FIELD_NUMBER: _ClassVar[int]
    BYTES_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TAGS_USED_FIELD_NUMBER: _ClassVar[int]
    TAGS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    rule: str
    bytes_used: int
    bytes_limit: int
    tags_used: int
    tags_limit: int
    def __init__(self, repository: _Optional[str] = ..., rule: _Optional[str] = ..., bytes_used: _Optional[int] = ..., bytes_limit: _Optional[int] = ..., tags_used: _Optional[int] = ..., tags_limit: _Optional[int] = ...) -> None: ...

class ImmutableTagRule(_message.Message):
    __slots__ = ("name", "pattern")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    name: str
    pattern: str
    def __init__(self, name: _Optional[str] = ..., pattern: _Optional[str] = ...) -> None: ...

class QuotaRule(_message.Message):
    __slots__ = ("name", "repositories", "bytes", "tags")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    repositories: str
    bytes: int
    tags: int
    def __init__(self, name: _Optional[str] = ..., repositories: _Optional[str] = ..., bytes: _Optional[int] = ..., tags: _Optional[int] = ...) -> None: ...

class RetentionRule(_message.Message):
    __slots__ = ("name", "repositories", "keep_last", "pushed_within", "pulled_within", "keep_tags", "untagged_older_than", "schedule")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    PUSHED_WITHIN_FIELD_NUMBER: _ClassVar[int]
    PULLED_WITHIN_FIELD_NUMBER: _ClassVar[int]
    KEEP_TAGS_FIELD_NUMBER: _ClassVar[int]
    UNTAGGED_OLDER_THAN_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    name: str
    repositories: str
    keep_last: int
    pushed_within: _duration_pb2.Duration
    pulled_within: _duration_pb2.Duration
    keep_tags: _containers.RepeatedScalarFieldContainer[str]
    untagged_older_than: _duration_pb2.Duration
    schedule: str
    def __init__(self, name: _Optional[str] = ..., repositories: _Optional[str] = ..., keep_last: _Optional[int] = ..., pushed_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., pulled_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., keep_tags: _Optional[_Iterable[str]] = ..., untagged_older_than: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., schedule: _Optional[str] = ...) -> None: ...

class LifecyclePolicies(_message.Message):
    __slots__ = ("immutable", "quotas", "retention", "revision", "updated", "source")
    IMMUTABLE_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    immutable: _containers.RepeatedCompositeFieldContainer[ImmutableTagRule]
    quotas: _containers.RepeatedCompositeFieldContainer[QuotaRule]
    retention: _containers.RepeatedCompositeFieldContainer[RetentionRule]
    revision: int
    updated: _timestamp_pb2.Timestamp
    source: str
    def __init__(self, immutable: _Optional[_Iterable[_Union[ImmutableTagRule, _Mapping]]] = ..., quotas: _Optional[_Iterable[_Union[QuotaRule, _Mapping]]] = ..., retention: _Optional[_Iterable[_Union[RetentionRule, _Mapping]]] = ..., revision: _Optional[int] = ..., updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class GetLifecyclePoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetLifecyclePoliciesRequest(_message.Message):
    __slots__ = ("policies", "expected_revision")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    policies: LifecyclePolicies
    expected_revision: int
    def __init__(self, policies: _Optional[_Union[LifecyclePolicies, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class RunRetentionRequest(_message.Message):
    __slots__ = ("dry_run", "rules")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    rules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dry_run: _Optional[bool] = ..., rules: _Optional[_Iterable[str]] = ...) -> None: ...

class RetentionItem(_message.Message):
    __slots__ = ("kind", "repository", "tag", "digest", "size", "rule")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[RetentionItem.Kind]
        TAG: _ClassVar[RetentionItem.Kind]
        MANIFEST: _ClassVar[RetentionItem.Kind]
    KIND_UNSPECIFIED: RetentionItem.Kind
    TAG: RetentionItem.Kind
    MANIFEST: RetentionItem.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    kind: RetentionItem.Kind
    repository: str
    tag: str
    digest: str
    size: int
    rule: str
    def __init__(self, kind: _Optional[_Union[RetentionItem.Kind, str]] = ..., repository: _Optional[str] = ..., tag: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., rule: _Optional[str] = ...) -> None: ...

class RetentionStats(_message.Message):
    __slots__ = ("repositories", "tags_kept", "tags_deleted", "manifests_deleted", "bytes_freed", "skipped", "started", "finished")
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    TAGS_KEPT_FIELD_NUMBER: _ClassVar[int]
    TAGS_DELETED_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    repositories: int
    tags_kept: int
    tags_deleted: int
    manifests_deleted: int
    bytes_freed: int
    skipped: int
    started: _timestamp_pb2.Timestamp
    finished: _timestamp_pb2.Timestamp
    def __init__(self, repositories: _Optional[int] = ..., tags_kept: _Optional[int] = ..., tags_deleted: _Optional[int] = ..., manifests_deleted: _Optional[int] = ..., bytes_freed: _Optional[int] = ..., skipped: _Optional[int] = ..., started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RetentionProgress(_message.Message):
    __slots__ = ("phase", "message", "item", "stats", "dry_run")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[RetentionProgress.Phase]
        PLAN: _ClassVar[RetentionProgress.Phase]
        DELETE_TAGS: _ClassVar[RetentionProgress.Phase]
        DELETE_MANIFESTS: _ClassVar[RetentionProgress.Phase]
        DONE: _ClassVar[RetentionProgress.Phase]
    PHASE_UNSPECIFIED: RetentionProgress.Phase
    PLAN: RetentionProgress.Phase
    DELETE_TAGS: RetentionProgress.Phase
    DELETE_MANIFESTS: RetentionProgress.Phase
    DONE: RetentionProgress.Phase
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    phase: RetentionProgress.Phase
    message: str
    item: RetentionItem
    stats: RetentionStats
    dry_run: bool
    def __init__(self, phase: _Optional[_Union[RetentionProgress.Phase, str]] = ..., message: _Optional[str] = ..., item: _Optional[_Union[RetentionItem, _Mapping]] = ..., stats: _Optional[_Union[RetentionStats, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class RunScrubRequest(_message.Message):
    __slots__ = ("dry_run", "rate", "unlimited")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    rate: int
    unlimited: bool
    def __init__(self, dry_run: _Optional[bool] = ..., rate: _Optional[int] = ..., unlimited: _Optional[bool] = ...) -> None: ...

class ScrubItem(_message.Message):
    __slots__ = ("kind", "digest", "actual_digest", "repository", "manifest", "size", "quarantined")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ScrubItem.Kind]
        CORRUPT: _ClassVar[ScrubItem.Kind]
        MISSING: _ClassVar[ScrubItem.Kind]
    KIND_UNSPECIFIED: ScrubItem.Kind
    CORRUPT: ScrubItem.Kind
    MISSING: ScrubItem.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    kind: ScrubItem.Kind
    digest: str
    actual_digest: str
    repository: str
    manifest: str
    size: int
    quarantined: bool
    def __init__(self, kind: _Optional[_Union[ScrubItem.Kind, str]] = ..., digest: _Optional[str] = ..., actual_digest: _Optional[str] = ..., repository: _Optional[str] = ..., manifest: _Optional[str] = ..., size: _Optional[int] = ..., quarantined: _Optional[bool] = ...) -> None: ...

class ScrubStats(_message.Message):
    __slots__ = ("blobs_checked", "bytes_hashed", "corrupt", "quarantined", "manifests_checked", "missing", "rate", "tick_seconds", "tick_budget", "max_tick_bytes", "ticks", "started", "finished")
    BLOBS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    BYTES_HASHED_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    TICK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TICK_BUDGET_FIELD_NUMBER: _ClassVar[int]
    MAX_TICK_BYTES_FIELD_NUMBER: _ClassVar[int]
    TICKS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    blobs_checked: int
    bytes_hashed: int
    corrupt: int
    quarantined: int
    manifests_checked: int
    missing: int
    rate: int
    tick_seconds: float
    tick_budget: int
    max_tick_bytes: int
    ticks: int
    started: _timestamp_pb2.Timestamp
    finished: _timestamp_pb2.Timestamp
    def __init__(self, blobs_checked: _Optional[int] = ..., bytes_hashed: _Optional[int] = ..., corrupt: _Optional[int] = ..., quarantined: _Optional[int] = ..., manifests_checked: _Optional[int] = ..., missing: _Optional[int] = ..., rate: _Optional[int] = ..., tick_seconds: _Optional[float] = ..., tick_budget: _Optional[int] = ..., max_tick_bytes: _Optional[int] = ..., ticks: _Optional[int] = ..., started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ScrubProgress(_message.Message):
    __slots__ = ("phase", "message", "item", "stats", "dry_run")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[ScrubProgress.Phase]
        HASH_BLOBS: _ClassVar[ScrubProgress.Phase]
        CHECK_MANIFESTS: _ClassVar[ScrubProgress.Phase]
        DONE: _ClassVar[ScrubProgress.Phase]
    PHASE_UNSPECIFIED: ScrubProgress.Phase
    HASH_BLOBS: ScrubProgress.Phase
    CHECK_MANIFESTS: ScrubProgress.Phase
    DONE: ScrubProgress.Phase
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    phase: ScrubProgress.Phase
    message: str
    item: ScrubItem
    stats: ScrubStats
    dry_run: bool
    def __init__(self, phase: _Optional[_Union[ScrubProgress.Phase, str]] = ..., message: _Optional[str] = ..., item: _Optional[_Union[ScrubItem, _Mapping]] = ..., stats: _Optional[_Union[ScrubStats, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...
