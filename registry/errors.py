"""Errors of the OCI Distribution API as domain values, rendered to HTTP once at the edge."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class ErrorCode(Enum):
    """The spec's error codes with their HTTP status codes."""

    BLOB_UNKNOWN = ("BLOB_UNKNOWN", 404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
    DIGEST_INVALID = ("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = ("MANIFEST_BLOB_UNKNOWN", 400, "manifest references a blob unknown")
    MANIFEST_INVALID = ("MANIFEST_INVALID", 400, "manifest invalid")
    MANIFEST_UNKNOWN = ("MANIFEST_UNKNOWN", 404, "manifest unknown")
    NAME_INVALID = ("NAME_INVALID", 400, "invalid repository name")
    NAME_UNKNOWN = ("NAME_UNKNOWN", 404, "repository name not known to registry")
    SIZE_INVALID = ("SIZE_INVALID", 400, "provided length did not match content length")
    TAG_INVALID = ("TAG_INVALID", 400, "manifest tag did not match URI")
    UNAUTHORIZED = ("UNAUTHORIZED", 401, "authentication required")
    DENIED = ("DENIED", 403, "requested access to the resource is denied")
    # 405 as in Distribution: the method or operation is not offered here.
    UNSUPPORTED = ("UNSUPPORTED", 405, "the operation is unsupported")
    TOOMANYREQUESTS = ("TOOMANYREQUESTS", 429, "too many requests")
    RANGE_INVALID = ("RANGE_INVALID", 416, "invalid content range")
    PAGINATION_NUMBER_INVALID = ("PAGINATION_NUMBER_INVALID", 400, "invalid number of results")
    PAYLOAD_TOO_LARGE = ("SIZE_INVALID", 413, "payload too large")
    UNAVAILABLE = ("UNAVAILABLE", 503, "service unavailable")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]

    @property
    def default_message(self) -> str:
        return self.value[2]


@dataclass
class OCIError(Exception):
    """A failure the client must hear about, in the spec's terms."""

    error: ErrorCode
    message: str = ""
    detail: Any = None
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message or self.error.default_message)

    @property
    def status(self) -> int:
        return self.error.status

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.error.code,
            "message": self.message or self.error.default_message,
        }
        if self.detail is not None:
            body["detail"] = self.detail
        return {"errors": [body]}
