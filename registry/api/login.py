"""Basic logins over HTTP, for the auth middleware and the token endpoint alike: the auth
state an application carries, the caller's address, Basic credentials and their challenge."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from aiohttp import web

from registry.auth.service import ANONYMOUS, AuthService, Identity, LoginRefused, LoginThrottled
from registry.config import AuthConfig
from registry.errors import ErrorCode, OCIError

AUTH = web.AppKey("auth", AuthService)
AUTH_CONFIG = web.AppKey("auth_config", AuthConfig)


def client_address(request: web.Request) -> str:
    return request.remote or ""


def quote(value: str) -> str:
    """A value inside a double-quoted challenge parameter."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def basic_challenge(realm: str) -> str:
    return f'Basic realm="{quote(realm)}",charset="UTF-8"'


def basic_credentials(value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


async def basic_login(
    request: web.Request, value: str, refused: Callable[[str], OCIError]
) -> Identity:
    """The user of a Basic `Authorization` value; empty credentials are anonymous."""
    auth = request.app[AUTH]
    credentials = basic_credentials(value)
    if credentials is None:
        raise refused("malformed Basic credentials")
    user, password = credentials
    if not user and not password:
        # containers/image sends `Basic :` when it has no credentials.
        return ANONYMOUS
    try:
        return await auth.login(user, password, client_address(request))
    except LoginThrottled as exc:
        raise OCIError(
            ErrorCode.TOOMANYREQUESTS,
            "too many failed logins from this address",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    except LoginRefused as exc:
        raise refused(str(exc)) from None
