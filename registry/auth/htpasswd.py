"""Users from a bcrypt htpasswd file, as `htpasswd -B` writes it (`user:$2y$05$...`).

bcrypt is slow on purpose, so checks run in a thread and a successful check is remembered for a
short while, keyed by a keyed hash of the credentials (the password itself is never kept).
Unknown users are checked against a dummy hash of the same cost, so the answer takes as long
whether or not the user exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import bcrypt

_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
# bcrypt reads at most 72 bytes of a password; htpasswd truncates the same way.
_BCRYPT_MAX = 72
_DEFAULT_COST = 10


class HtpasswdError(ValueError):
    """The htpasswd file cannot be used; the message names the line, never a hash."""


def parse(text: str, source: str = "htpasswd") -> dict[str, bytes]:
    entries: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise HtpasswdError(f"{source} line {number}: expected user:hash")
        raw = hashed.encode()
        if not raw.startswith(_BCRYPT_PREFIXES):
            raise HtpasswdError(
                f"{source} line {number}: user {user!r} is not a bcrypt entry (use htpasswd -B)"
            )
        entries[user] = raw
    return entries


def _cost(hashed: bytes) -> int:
    try:
        return int(hashed.split(b"$")[2])
    except (IndexError, ValueError):
        return _DEFAULT_COST


class Htpasswd:
    def __init__(
        self,
        entries: Mapping[str, bytes],
        cache_ttl: float = 60.0,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries = dict(entries)
        cost = max((_cost(h) for h in self._entries.values()), default=_DEFAULT_COST)
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[bytes, float] = {}
        self._cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._clock = clock

    @classmethod
    async def load(cls, path: str) -> Htpasswd:
        def read() -> Htpasswd:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise HtpasswdError(f"cannot read htpasswd file {path}: {exc.strerror}") from None
            return cls(parse(text, path))

        return await asyncio.to_thread(read)

    def __contains__(self, user: object) -> bool:
        return user in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def fingerprint(self, user: str) -> str | None:
        """Changes whenever the user's entry changes (a new password invalidates refresh tokens)."""
        hashed = self._entries.get(user)
        return hashlib.sha256(hashed).hexdigest()[:32] if hashed is not None else None

    async def verify(self, user: str, password: str) -> bool:
        hashed = self._entries.get(user)
        secret = password.encode()[:_BCRYPT_MAX]
        key = hmac.new(
            self._cache_key, b"\0".join((user.encode(), secret, hashed or b"")), hashlib.sha256
        ).digest()
        now = self._clock()
        expires = self._cache.get(key)
        if expires is not None:
            if expires > now:
                return True
            del self._cache[key]
        if hashed is None:
            await asyncio.to_thread(bcrypt.checkpw, secret, self._dummy)
            return False
        if not await asyncio.to_thread(bcrypt.checkpw, secret, hashed):
            return False
        self._remember(key, now)
        return True

    def _remember(self, key: bytes, now: float) -> None:
        if len(self._cache) >= self._cache_size:
            for stale in [k for k, exp in self._cache.items() if exp <= now]:
                del self._cache[stale]
            while len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = now + self._cache_ttl
