"""Reading S3's answers: which error code a failed call carries."""

from __future__ import annotations

from botocore.exceptions import ClientError

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
# An upload that was completed or aborted (some stores answer as for a missing key).
_NO_UPLOAD = _NOT_FOUND | {"NoSuchUpload"}


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_not_found(error: ClientError) -> bool:
    return error_code(error) in _NOT_FOUND


def is_no_upload(error: ClientError) -> bool:
    return error_code(error) in _NO_UPLOAD
