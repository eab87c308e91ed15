"""How the client reaches a registry: sessions and pools, TLS, authentication, errors.

Authentication is Basic or the Docker bearer-token flow: a registry answers 401 with
`WWW-Authenticate: Bearer realm=...,service=...,scope=...`; the transport fetches a token from
the realm (with Basic credentials when it has some, anonymous otherwise), caches it per scope
until it expires and sends the request once more. `Basic` challenges are answered with the
credentials directly. What is not an expected status becomes a `RegistryError`, with the spec's
error code and any Retry-After.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from nimbus.oci.errors import ClientCertificateRequiredError, RegistryError
from nimbus.oci.headers import retry_after_seconds
from nimbus.tls.client import asked_for_a_client_certificate

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


Body = bytes | AsyncIterator[bytes] | None
# Bytes of an error body read for its code and message.
MAX_ERROR_BODY = 65536


def ssl_context(verify: bool = True, ca_file: str = "") -> ssl.SSLContext | bool:
    """What aiohttp takes for `ssl=`: the default checks, a private CA, or none at all."""
    if not verify:
        return False
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return True


class Transport:
    """One registry, one connection pool and one set of tokens; shared by concurrent tasks."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None = None,
        *,
        ssl: ssl.SSLContext | bool = True,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 32,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = Authenticator(credentials)
        self.headers = dict(headers or {})
        self._ssl = ssl
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
                auto_decompress=False,
                skip_auto_headers=("Content-Type",),
            )
        return self._session

    def with_headers(self, headers: Mapping[str, str]) -> Transport:
        """The same registry, pool and tokens, sending ``headers`` on every request too."""
        self.session  # noqa: B018 -- open the pool now so the copy shares it
        view = copy.copy(self)
        view.headers = {**self.headers, **headers}
        return view

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str, params: Mapping[str, str] | None = None) -> URL:
        """Absolute URL of a path, or of a Location the registry gave (kept as it was encoded)."""
        raw = path if path.startswith(("http://", "https://")) else self.base_url + path
        if params:
            # Appended by hand: re-encoding a registry's opaque `_state` query would corrupt it.
            raw += ("&" if "?" in raw else "?") + urlencode(params)
        return URL(raw, encoded=True)

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        ok: tuple[int, ...] = (200,),
        allow: tuple[int, ...] = (),
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Body = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send with auth, answer one 401 challenge, and raise on any status not expected.

        A streamed body cannot be sent twice, so the 401 retry only happens for bytes bodies;
        callers open an authorized session with a body-less request first (upload POST).
        """
        url = self.url(path, params)
        replayable = data is None or isinstance(data, bytes)
        for attempt in (1, 2):
            sent = {**self.headers, **(headers or {})}
            authorization = await self.auth.prepare(self.session, scope)
            if authorization:
                sent["Authorization"] = authorization
            try:
                response = await self.session.request(method, url, headers=sent, data=data)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if url.scheme == "https" and asked_for_a_client_certificate(
                    self._ssl, url.host or ""
                ):
                    raise ClientCertificateRequiredError(self.base_url) from exc
                raise
            try:
                if response.status == 401 and attempt == 1 and replayable:
                    challenge = response.headers.get("WWW-Authenticate", "")
                    if challenge and await self.auth.answer(self.session, challenge, scope):
                        response.release()
                        continue
                if response.status not in ok and response.status not in allow:
                    raise await error_of(response)
                yield response
                return
            finally:
                response.release()

    def location(self, response: aiohttp.ClientResponse) -> str:
        """The response's Location, absolute (a relative one is relative to the request)."""
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(
                502, response.method, str(response.url), message="no Location header"
            )
        return str(response.url.join(URL(location, encoded=True)))


async def error_of(response: aiohttp.ClientResponse) -> RegistryError:
    """The error a response stands for, with the first of the spec's error codes it carries."""
    code, message = "", ""
    if response.method != "HEAD":
        try:
            body = json.loads(await response.content.read(MAX_ERROR_BODY))
            first = (body.get("errors") or [{}])[0]
            code, message = str(first.get("code", "")), str(first.get("message", ""))
        except (ValueError, AttributeError, IndexError, aiohttp.ClientError):
            pass
    return RegistryError(
        response.status,
        response.method,
        str(response.url),
        code,
        message,
        retry_after_seconds(response.headers.get("Retry-After")),
    )
