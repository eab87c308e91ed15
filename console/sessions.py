"""Sessions in one cookie: encrypted and authenticated (AES-GCM), HttpOnly, SameSite=Lax.

The cookie holds who signed in (a registry user with the password the console reads the OCI
API with for them, or the operator of the admin pages), the CSRF token and the expiry. Nothing
is kept on the server; a cookie that does not decrypt, or has expired, is a fresh anonymous one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, replace

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from console.handlers import Handler

COOKIE = "nimbus_console"
_AAD = b"nimbus-console-session-v1"


def _new_csrf() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class Session:
    # The registry user; "" for anonymous (and for the operator signed in with the token only).
    user: str = ""
    password: str = ""
    admin: bool = False
    csrf: str = field(default_factory=_new_csrf)
    expires: float = 0.0

    @property
    def signed_in(self) -> bool:
        return bool(self.user) or self.admin

    @property
    def label(self) -> str:
        if self.admin:
            return "admin" if not self.user else f"{self.user} (admin)"
        return self.user or "anonymous"


class SessionCodec:
    def __init__(self, secret: str, ttl: int) -> None:
        raw = secret.encode() if secret else os.urandom(32)
        self._aead = AESGCM(hashlib.sha256(b"nimbus-console|" + raw).digest())
        self.ttl = ttl

    def encode(self, session: Session) -> str:
        nonce = os.urandom(12)
        payload = json.dumps(asdict(session), separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, payload, _AAD)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def decode(self, value: str) -> Session | None:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            payload = self._aead.decrypt(raw[:12], raw[12:], _AAD)
            session = Session(**json.loads(payload))
        except (binascii.Error, ValueError, InvalidTag, TypeError):
            return None
        if session.expires and session.expires < time.time():
            return None
        return session

    def signed_in(self, user: str = "", password: str = "", admin: bool = False) -> Session:
        """A new session (and a new CSRF token): never carry one across a sign-in."""
        return Session(user, password, admin, expires=time.time() + self.ttl)


SESSION = web.RequestKey("nimbus_session", Session)
CODEC = web.AppKey("session_codec", SessionCodec)


def current(request: web.Request) -> Session:
    session: Session = request[SESSION]
    return session


def store(request: web.Request, response: web.StreamResponse, session: Session) -> None:
    """Send `session` as the cookie (also when it is unchanged: the expiry slides)."""
    codec = request.app[CODEC]
    if session.signed_in:
        session = replace(session, expires=time.time() + codec.ttl)
    response.set_cookie(
        COOKIE,
        codec.encode(session),
        httponly=True,
        samesite="Lax",
        secure=request.secure,
        path="/",
        max_age=codec.ttl,
    )


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    codec = request.app[CODEC]
    raw = request.cookies.get(COOKIE)
    found = codec.decode(raw) if raw else None
    request[SESSION] = found or Session()
    try:
        response = await handler(request)
    except web.HTTPException as redirect:
        # A redirect after signing in or out carries the new cookie too.
        if found is None or request[SESSION] is not found:
            store(request, redirect, request[SESSION])
        raise
    if found is None or request[SESSION] is not found:
        if not response.prepared:
            store(request, response, request[SESSION])
    return response
