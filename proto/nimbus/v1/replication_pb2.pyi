import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Rule(_message.Message):
    __slots__ = ("include", "exclude", "tag_pattern", "actions", "disabled")
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    TAG_PATTERN_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    include: _containers.RepeatedScalarFieldContainer[str]
    exclude: _containers.RepeatedScalarFieldContainer[str]
    tag_pattern: str
    actions: _containers.RepeatedScalarFieldContainer[str]
    disabled: bool
    def __init__(self, include: _Optional[_Iterable[str]] = ..., exclude: _Optional[_Iterable[str]] = ..., tag_pattern: _Optional[str] = ..., actions: _Optional[_Iterable[str]] = ..., disabled: _Optional[bool] = ...) -> None: ...

class Credentials(_message.Message):
    __slots__ = ("username", "password", "token")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    token: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("name", "url", "site", "credentials", "tls_insecure", "ca_pem", "reconcile_interval_seconds", "rules", "credentials_kind", "client_cert_pem", "client_key_pem")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    TLS_INSECURE_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    RECONCILE_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_KIND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    CLIENT_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    site: str
    credentials: Credentials
    tls_insecure: bool
    ca_pem: str
    reconcile_interval_seconds: float
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    credentials_kind: str
    client_cert_pem: str
    client_key_pem: str
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., site: _Optional[str] = ..., credentials: _Optional[_Union[Credentials, _Mapping]] = ..., tls_insecure: _Optional[bool] = ..., ca_pem: _Optional[str] = ..., reconcile_interval_seconds: _Optional[float] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., credentials_kind: _Optional[str] = ..., client_cert_pem: _Optional[str] = ..., client_key_pem: _Optional[str] = ...) -> None: ...

class CreatePeerRequest(_message.Message):
    __slots__ = ("peer",)
    PEER_FIELD_NUMBER: _ClassVar[int]
    peer: Peer
    def __init__(self, peer: _Optional[_Union[Peer, _Mapping]] = ...) -> None: ...

class GetPeerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPeersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPeersResponse(_message.Message):
    __slots__ = ("peers", "next_page_token")
    PEERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    next_page_token: str
    def __init__(self, peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePeerRequest(_message.Message):
    __slots__ = ("peer", "update_mask")
    PEER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    peer: Peer
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, peer: _Optional[_Union[Peer, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeletePeerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePeerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("peer",)
    PEER_FIELD_NUMBER: _ClassVar[int]
    peer: str
    def __init__(self, peer: _Optional[str] = ...) -> None: ...

class PeerStatus(_message.Message):
    __slots__ = ("peer", "backlog", "in_flight", "last_success", "last_success_change", "last_error", "last_error_reason", "bytes_copied", "images_copied", "deletes_replicated", "failures", "last_hour")
    PEER_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_CHANGE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    BYTES_COPIED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_COPIED_FIELD_NUMBER: _ClassVar[int]
    DELETES_REPLICATED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_HOUR_FIELD_NUMBER: _ClassVar[int]
    peer: str
    backlog: int
    in_flight: int
    last_success: _timestamp_pb2.Timestamp
    last_success_change: str
    last_error: _timestamp_pb2.Timestamp
    last_error_reason: str
    bytes_copied: int
    images_copied: int
    deletes_replicated: int
    failures: int
    last_hour: _containers.RepeatedCompositeFieldContainer[PeerSample]
    def __init__(self, peer: _Optional[str] = ..., backlog: _Optional[int] = ..., in_flight: _Optional[int] = ..., last_success: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_success_change: _Optional[str] = ..., last_error: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error_reason: _Optional[str] = ..., bytes_copied: _Optional[int] = ..., images_copied: _Optional[int] = ..., deletes_replicated: _Optional[int] = ..., failures: _Optional[int] = ..., last_hour: _Optional[_Iterable[_Union[PeerSample, _Mapping]]] = ...) -> None: ...

class PeerSample(_message.Message):
    __slots__ = ("minute", "images_copied", "bytes_copied", "deletes_replicated", "lag_seconds_mean", "lag_seconds_max")
    MINUTE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_COPIED_FIELD_NUMBER: _ClassVar[int]
    BYTES_COPIED_FIELD_NUMBER: _ClassVar[int]
    DELETES_REPLICATED_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_MEAN_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_MAX_FIELD_NUMBER: _ClassVar[int]
    minute: _timestamp_pb2.Timestamp
    images_copied: int
    bytes_copied: int
    deletes_replicated: int
    lag_seconds_mean: float
    lag_seconds_max: float
    def __init__(self, minute: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., images_copied: _Optional[int] = ..., bytes_copied: _Optional[int] = ..., deletes_replicated: _Optional[int] = ..., lag_seconds_mean: _Optional[float] = ..., lag_seconds_max: _Optional[float] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerStatus]
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerStatus, _Mapping]]] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("id", "peer", "repository", "reference", "digest", "action", "reason", "attempts", "first_failed", "last_failed", "kind")
    ID_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FIRST_FAILED_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILED_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    id: str
    peer: str
    repository: str
    reference: str
    digest: str
    action: str
    reason: str
    attempts: int
    first_failed: _timestamp_pb2.Timestamp
    last_failed: _timestamp_pb2.Timestamp
    kind: str
    def __init__(self, id: _Optional[str] = ..., peer: _Optional[str] = ..., repository: _Optional[str] = ..., reference: _Optional[str] = ..., digest: _Optional[str] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ..., attempts: _Optional[int] = ..., first_failed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_failed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ...) -> None: ...

class ListFailuresRequest(_message.Message):
    __slots__ = ("peer", "page_size", "page_token")
    PEER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    peer: str
    page_size: int
    page_token: str
    def __init__(self, peer: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFailuresResponse(_message.Message):
    __slots__ = ("failures", "next_page_token")
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    failures: _containers.RepeatedCompositeFieldContainer[Failure]
    next_page_token: str
    def __init__(self, failures: _Optional[_Iterable[_Union[Failure, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetryFailureRequest(_message.Message):
    __slots__ = ("peer", "id")
    PEER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    peer: str
    id: str
    def __init__(self, peer: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class RetryFailureResponse(_message.Message):
    __slots__ = ("retried", "succeeded", "still_failing")
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    STILL_FAILING_FIELD_NUMBER: _ClassVar[int]
    retried: int
    succeeded: int
    still_failing: _containers.RepeatedCompositeFieldContainer[Failure]
    def __init__(self, retried: _Optional[int] = ..., succeeded: _Optional[int] = ..., still_failing: _Optional[_Iterable[_Union[Failure, _Mapping]]] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("peer", "repository")
    PEER_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    peer: str
    repository: str
    def __init__(self, peer: _Optional[str] = ..., repository: _Optional[str] = ...) -> None: ...

class SyncProgress(_message.Message):
    __slots__ = ("phase", "repository", "reference", "done", "total", "images_copied", "bytes_copied", "failed", "error", "finished")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_COPIED_FIELD_NUMBER: _ClassVar[int]
    BYTES_COPIED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    phase: str
    repository: str
    reference: str
    done: int
    total: int
    images_copied: int
    bytes_copied: int
    failed: int
    error: str
    finished: bool
    def __init__(self, phase: _Optional[str] = ..., repository: _Optional[str] = ..., reference: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., images_copied: _Optional[int] = ..., bytes_copied: _Optional[int] = ..., failed: _Optional[int] = ..., error: _Optional[str] = ..., finished: _Optional[bool] = ...) -> None: ...

class LocateManifestRequest(_message.Message):
    __slots__ = ("repository", "reference")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    repository: str
    reference: str
    def __init__(self, repository: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class ManifestPresence(_message.Message):
    __slots__ = ("peer", "selected", "present", "digest", "error")
    PEER_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    peer: str
    selected: bool
    present: bool
    digest: str
    error: str
    def __init__(self, peer: _Optional[str] = ..., selected: _Optional[bool] = ..., present: _Optional[bool] = ..., digest: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class LocateManifestResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[ManifestPresence]
    def __init__(self, peers: _Optional[_Iterable[_Union[ManifestPresence, _Mapping]]] = ...) -> None: ...
