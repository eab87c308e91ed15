"""The spec's grammar for repository names, tags and digests."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from nimbus.oci.digests import InvalidDigestError, check_digest
from registry.errors import ErrorCode, OCIError

NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{NAME_COMPONENT}(?:/{NAME_COMPONENT})*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
MAX_NAME_LENGTH = 255


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise OCIError(
            ErrorCode.NAME_INVALID, f"repository name longer than {MAX_NAME_LENGTH} characters"
        )
    if not NAME_RE.match(name):
        raise OCIError(ErrorCode.NAME_INVALID, "invalid repository name", detail={"name": name})
    return name


def is_tag(reference: str) -> bool:
    return TAG_RE.match(reference) is not None


def validate_tag(tag: str) -> str:
    if not is_tag(tag):
        raise OCIError(ErrorCode.TAG_INVALID, "invalid tag", detail={"tag": tag})
    return tag


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parse and check a digest: a bad form or an algorithm we cannot verify is DIGEST_INVALID.

        Distribution answers an unsupported algorithm the same way, and the spec allows only
        400/404 on the endpoints that take digests (UNSUPPORTED is the 405 of a method).
        """
        try:
            check_digest(value)
        except InvalidDigestError as error:
            raise OCIError(ErrorCode.DIGEST_INVALID, str(error), detail={"digest": value}) from None
        algorithm, _, encoded = value.partition(":")
        return cls(algorithm, encoded)

    def hasher(self) -> Any:
        return hashlib.new(self.algorithm)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def is_digest(reference: str) -> bool:
    return ":" in reference
