"""Digests: their grammar, and hashing that keeps large inputs off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
# Hex lengths of the algorithms we can verify.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
_HEX_RE = re.compile(r"[a-f0-9]+")
# Updates at least this large are hashed in a worker thread (hashlib releases the GIL there);
# smaller ones cost less than the hop.
OFFLOAD_BYTES = 64 * 1024


class InvalidDigestError(ValueError):
    """Not a digest, or one of an algorithm we cannot verify."""


def check_digest(value: str) -> str:
    """``value`` when it is a digest we can verify; InvalidDigestError says what is wrong."""
    if not DIGEST_RE.match(value):
        raise InvalidDigestError("invalid digest")
    algorithm, _, encoded = value.partition(":")
    length = ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidDigestError(f"unsupported digest algorithm {algorithm!r}")
    if len(encoded) != length or not _HEX_RE.fullmatch(encoded):
        raise InvalidDigestError("invalid digest")
    return value


def algorithm_of(digest: str, default: str = "sha256") -> str:
    algorithm = digest.partition(":")[0] if ":" in digest else ""
    return algorithm or default


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    """The digest of small content, hashed here and now."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class Hasher:
    """A running digest fed by a stream, hashing large updates in a worker thread.

    Not for concurrent use: each update is awaited before the next.
    """

    def __init__(self, algorithm: str = "sha256") -> None:
        self.algorithm = algorithm
        self.size = 0
        self._hash: Any = hashlib.new(algorithm)

    async def update(self, data: bytes) -> None:
        if len(data) >= OFFLOAD_BYTES:
            await asyncio.to_thread(self._hash.update, data)
        else:
            self._hash.update(data)
        self.size += len(data)

    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"


async def hash_bytes(data: bytes, algorithm: str = "sha256") -> str:
    """`digest_of`, off the event loop when ``data`` is large."""
    hasher = Hasher(algorithm)
    await hasher.update(data)
    return hasher.digest()
