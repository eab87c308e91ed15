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

class ListUpstreamsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpstreamStats(_message.Message):
    __slots__ = ("manifest_hits", "manifest_misses", "blob_hits", "blob_misses", "bytes_from_upstream", "errors", "stale_served", "revalidations")
    MANIFEST_HITS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_MISSES_FIELD_NUMBER: _ClassVar[int]
    BLOB_HITS_FIELD_NUMBER: _ClassVar[int]
    BLOB_MISSES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    STALE_SERVED_FIELD_NUMBER: _ClassVar[int]
    REVALIDATIONS_FIELD_NUMBER: _ClassVar[int]
    manifest_hits: int
    manifest_misses: int
    blob_hits: int
    blob_misses: int
    bytes_from_upstream: int
    errors: int
    stale_served: int
    revalidations: int
    def __init__(self, manifest_hits: _Optional[int] = ..., manifest_misses: _Optional[int] = ..., blob_hits: _Optional[int] = ..., blob_misses: _Optional[int] = ..., bytes_from_upstream: _Optional[int] = ..., errors: _Optional[int] = ..., stale_served: _Optional[int] = ..., revalidations: _Optional[int] = ...) -> None: ...

class Upstream(_message.Message):
    __slots__ = ("name", "url", "prefix", "is_default", "tag_ttl", "reachable", "latency", "error", "stats")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    TAG_TTL_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    prefix: str
    is_default: bool
    tag_ttl: _duration_pb2.Duration
    reachable: bool
    latency: _duration_pb2.Duration
    error: str
    stats: UpstreamStats
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., prefix: _Optional[str] = ..., is_default: _Optional[bool] = ..., tag_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reachable: _Optional[bool] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., error: _Optional[str] = ..., stats: _Optional[_Union[UpstreamStats, _Mapping]] = ...) -> None: ...

class ListUpstreamsResponse(_message.Message):
    __slots__ = ("upstreams", "cached_bytes", "max_bytes")
    UPSTREAMS_FIELD_NUMBER: _ClassVar[int]
    CACHED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    upstreams: _containers.RepeatedCompositeFieldContainer[Upstream]
    cached_bytes: int
    max_bytes: int
    def __init__(self, upstreams: _Optional[_Iterable[_Union[Upstream, _Mapping]]] = ..., cached_bytes: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class ListCachedRepositoriesRequest(_message.Message):
    __slots__ = ("upstream", "page_size", "page_token")
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    upstream: str
    page_size: int
    page_token: str
    def __init__(self, upstream: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class CachedRepository(_message.Message):
    __slots__ = ("name", "upstream", "remote", "tag_count", "manifest_count", "blob_count", "size", "last_pulled")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    TAG_COUNT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    BLOB_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LAST_PULLED_FIELD_NUMBER: _ClassVar[int]
    name: str
    upstream: str
    remote: str
    tag_count: int
    manifest_count: int
    blob_count: int
    size: int
    last_pulled: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., upstream: _Optional[str] = ..., remote: _Optional[str] = ..., tag_count: _Optional[int] = ..., manifest_count: _Optional[int] = ..., blob_count: _Optional[int] = ..., size: _Optional[int] = ..., last_pulled: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListCachedRepositoriesResponse(_message.Message):
    __slots__ = ("repositories", "next_page_token")
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    repositories: _containers.RepeatedCompositeFieldContainer[CachedRepository]
    next_page_token: str
    def __init__(self, repositories: _Optional[_Iterable[_Union[CachedRepository, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PurgeRequest(_message.Message):
    __slots__ = ("repository", "tag")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tag: str
    def __init__(self, repository: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class PurgeResponse(_message.Message):
    __slots__ = ("tags_removed", "manifests_removed", "blobs_removed", "bytes_freed")
    TAGS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    BLOBS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    tags_removed: int
    manifests_removed: int
    blobs_removed: int
    bytes_freed: int
    def __init__(self, tags_removed: _Optional[int] = ..., manifests_removed: _Optional[int] = ..., blobs_removed: _Optional[int] = ..., bytes_freed: _Optional[int] = ...) -> None: ...

class WarmRequest(_message.Message):
    __slots__ = ("reference", "platforms")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    reference: str
    platforms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reference: _Optional[str] = ..., platforms: _Optional[_Iterable[str]] = ...) -> None: ...

class WarmProgress(_message.Message):
    __slots__ = ("kind", "digest", "size", "bytes_done", "already_cached", "items_done", "items_total", "bytes_fetched", "message", "done")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[WarmProgress.Kind]
        MANIFEST: _ClassVar[WarmProgress.Kind]
        BLOB: _ClassVar[WarmProgress.Kind]
    KIND_UNSPECIFIED: WarmProgress.Kind
    MANIFEST: WarmProgress.Kind
    BLOB: WarmProgress.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    ALREADY_CACHED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_DONE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_FETCHED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    kind: WarmProgress.Kind
    digest: str
    size: int
    bytes_done: int
    already_cached: bool
    items_done: int
    items_total: int
    bytes_fetched: int
    message: str
    done: bool
    def __init__(self, kind: _Optional[_Union[WarmProgress.Kind, str]] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., bytes_done: _Optional[int] = ..., already_cached: _Optional[bool] = ..., items_done: _Optional[int] = ..., items_total: _Optional[int] = ..., bytes_fetched: _Optional[int] = ..., message: _Optional[str] = ..., done: _Optional[bool] = ...) -> None: ...
