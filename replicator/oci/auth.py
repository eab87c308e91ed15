"""Registry authentication: Basic, and the Docker bearer-token challenge flow.

A registry answers 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`; the
client fetches a token from the realm (with Basic credentials when it has some, anonymous
otherwise), caches it per scope until it expires and retries the request once. `Basic` challenges
are answered with the credentials directly. Used by the replicator towards its peers and by tests.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field

import aiohttp

from replicator.oci.errors import RegistryError

# Refresh a token this long before the registry would refuse it.
EXPIRY_MARGIN_SECONDS = 10.0
DEFAULT_TOKEN_SECONDS = 60.0

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Credentials:
    """Username and password (Basic, or exchanged for tokens), or a fixed bearer token."""

    username: str = ""
    password: str = ""
    token: str = ""

    def __repr__(self) -> str:
        # Never let a secret reach a log line through a repr.
        return f"Credentials(username={self.username!r}, password=***, token=***)"

    @property
    def has_basic(self) -> bool:
        return bool(self.username)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Split a WWW-Authenticate value into its challenges (RFC 7235 auth-params)."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        scheme, _, rest = rest.partition(" ")
        params: dict[str, str] = {}
        while True:
            match = _PARAM_RE.match(rest)
            if not match or (match.group(2) is None and match.group(3) is None):
                break
            value = match.group(2)
            if value is not None:
                value = re.sub(r"\\(.)", r"\1", value)
            else:
                value = match.group(3)
            params[match.group(1).lower()] = value
            rest = rest[match.end() :]
        challenges.append(Challenge(scheme.strip().lower(), params))
        rest = rest.lstrip(", ")
    return challenges


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """Remembers how a registry wants to be spoken to and hands out Authorization headers."""

    def __init__(self, credentials: Credentials | None = None) -> None:
        self.credentials = credentials or Credentials()
        self._tokens: dict[str, _Token] = {}
        self._basic = False
        self._bearer_challenge: Challenge | None = None

    def header(self, scope: str) -> str | None:
        """The Authorization value to send for ``scope``, if one is known to be needed."""
        if self.credentials.token and self._bearer_challenge is None:
            return f"Bearer {self.credentials.token}"
        if self._basic:
            return self.credentials.basic_header()
        token = self._tokens.get(scope)
        if token is not None and token.expires_at - EXPIRY_MARGIN_SECONDS > time.monotonic():
            return f"Bearer {token.value}"
        return None

    async def prepare(self, session: aiohttp.ClientSession, scope: str) -> str | None:
        """Like `header`, fetching a fresh token first when the registry uses tokens."""
        value = self.header(scope)
        if value is None and self._bearer_challenge is not None:
            await self._fetch_token(session, self._bearer_challenge, scope)
            value = self.header(scope)
        return value

    async def answer(
        self, session: aiohttp.ClientSession, www_authenticate: str, scope: str
    ) -> bool:
        """Handle a 401; True when the request is worth sending once more."""
        for challenge in parse_www_authenticate(www_authenticate):
            if challenge.scheme == "bearer" and "realm" in challenge.params:
                self._bearer_challenge = challenge
                self._tokens.pop(scope, None)
                await self._fetch_token(session, challenge, scope)
                return True
            if challenge.scheme == "basic" and self.credentials.has_basic and not self._basic:
                self._basic = True
                return True
        return False

    async def _fetch_token(
        self, session: aiohttp.ClientSession, challenge: Challenge, scope: str
    ) -> None:
        realm = challenge.params["realm"]
        query: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            query.append(("service", challenge.params["service"]))
        # The scope we need; the challenge's own scope is for the request that got the 401.
        for item in {scope, challenge.params.get("scope", "")} - {""}:
            query.append(("scope", item))
        headers = {}
        if self.credentials.has_basic:
            headers["Authorization"] = self.credentials.basic_header()
        elif self.credentials.token:
            headers["Authorization"] = f"Bearer {self.credentials.token}"
        async with session.get(realm, params=query, headers=headers) as response:
            if response.status != 200:
                raise RegistryError(
                    response.status, "GET", realm, message="token endpoint refused the request"
                )
            body = await response.json(content_type=None)
        value = body.get("token") or body.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryError(502, "GET", realm, message="token endpoint returned no token")
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 0.0
        self._tokens[scope] = _Token(value, time.monotonic() + (seconds or DEFAULT_TOKEN_SECONDS))
