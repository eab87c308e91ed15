import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TargetKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TARGET_KIND_UNSPECIFIED: _ClassVar[TargetKind]
    TARGET_KIND_MANIFEST: _ClassVar[TargetKind]
    TARGET_KIND_BLOB: _ClassVar[TargetKind]
TARGET_KIND_UNSPECIFIED: TargetKind
TARGET_KIND_MANIFEST: TargetKind
TARGET_KIND_BLOB: TargetKind

class Event(_message.Message):
    __slots__ = ("id", "timestamp", "action", "target", "request", "actor", "source", "traceparent")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    timestamp: _timestamp_pb2.Timestamp
    action: str
    target: Target
    request: Request
    actor: Actor
    source: Source
    traceparent: str
    def __init__(self, id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action: _Optional[str] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., request: _Optional[_Union[Request, _Mapping]] = ..., actor: _Optional[_Union[Actor, _Mapping]] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("media_type", "digest", "size", "length", "repository", "url", "tag", "from_repository", "kind", "upstream")
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    FROM_REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    digest: str
    size: int
    length: int
    repository: str
    url: str
    tag: str
    from_repository: str
    kind: TargetKind
    upstream: str
    def __init__(self, media_type: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., length: _Optional[int] = ..., repository: _Optional[str] = ..., url: _Optional[str] = ..., tag: _Optional[str] = ..., from_repository: _Optional[str] = ..., kind: _Optional[_Union[TargetKind, str]] = ..., upstream: _Optional[str] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("id", "addr", "host", "method", "useragent")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    USERAGENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    addr: str
    host: str
    method: str
    useragent: str
    def __init__(self, id: _Optional[str] = ..., addr: _Optional[str] = ..., host: _Optional[str] = ..., method: _Optional[str] = ..., useragent: _Optional[str] = ...) -> None: ...

class Actor(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("addr", "instance_id", "site", "origin_site")
    ADDR_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_SITE_FIELD_NUMBER: _ClassVar[int]
    addr: str
    instance_id: str
    site: str
    origin_site: str
    def __init__(self, addr: _Optional[str] = ..., instance_id: _Optional[str] = ..., site: _Optional[str] = ..., origin_site: _Optional[str] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...
