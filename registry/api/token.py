"""The built-in token endpoint of the Docker token specification.

`GET ?service=&scope=` with optional Basic credentials (docker, skopeo), and the OAuth2 `POST`
form (`grant_type=password` or `refresh_token`) that containerd and docker's login use. A token
carries only the requested actions the access rules allow; anonymous callers get what anonymous
rules allow. GET errors are OCI errors; POST errors are OAuth2 errors, which containerd reads.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from registry.api.login import AUTH, AUTH_CONFIG, basic_challenge, basic_login, client_address
from registry.auth.scopes import parse_scopes
from registry.auth.service import ANONYMOUS, Identity, LoginRefused, LoginThrottled
from registry.errors import ErrorCode, OCIError

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# A token request form holds a few short fields.
_MAX_FORM = 64 * 1024


def add_token_routes(app: web.Application, path: str) -> None:
    app.router.add_get(path, get_token, name="auth_token", allow_head=False)
    app.router.add_post(path, post_token, name="auth_token_post")


def _body(request: web.Request, identity: Identity, scopes: list[str]) -> dict[str, Any]:
    auth = request.app[AUTH]
    granted = auth.grant(identity, parse_scopes(scopes))
    issued = auth.issue(identity, granted)
    return {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
        "scope": " ".join(g.scope for g in granted if g.actions),
    }


def _service_matches(request: web.Request, service: str | None) -> bool:
    return not service or service == request.app[AUTH_CONFIG].token.service


async def get_token(request: web.Request) -> web.Response:
    config = request.app[AUTH_CONFIG]
    if not _service_matches(request, request.query.get("service")):
        raise OCIError(ErrorCode.DENIED, "tokens are issued for another service here")
    identity = ANONYMOUS
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if header:
        if scheme.lower() != "basic":
            raise OCIError(
                ErrorCode.UNAUTHORIZED,
                "Basic credentials expected",
                headers={"WWW-Authenticate": basic_challenge(config.realm)},
            )
        identity = await basic_login(
            request,
            value,
            lambda message: OCIError(
                ErrorCode.UNAUTHORIZED,
                message,
                headers={"WWW-Authenticate": basic_challenge(config.realm)},
            ),
        )
    body = _body(request, identity, request.query.getall("scope", []))
    if request.query.get("offline_token") == "true":
        refresh = request.app[AUTH].refresh_token(identity)
        if refresh is not None:
            body["refresh_token"] = refresh
    return web.json_response(body, headers=_NO_STORE)


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description}, status=status, headers=_NO_STORE
    )


async def post_token(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    if request.content_length is not None and request.content_length > _MAX_FORM:
        return _oauth_error(400, "invalid_request", "form too large")
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not _service_matches(request, fields.get("service")):
        return _oauth_error(400, "invalid_request", "tokens are issued for another service here")
    grant_type = fields.get("grant_type", "")
    client = client_address(request)
    try:
        if grant_type == "password":
            identity = await auth.login(
                fields.get("username", ""), fields.get("password", ""), client
            )
        elif grant_type == "refresh_token":
            identity = await auth.refresh(fields.get("refresh_token", ""), client)
        else:
            return _oauth_error(400, "unsupported_grant_type", "use password or refresh_token")
    except LoginThrottled as exc:
        response = _oauth_error(429, "slow_down", "too many failed logins from this address")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except LoginRefused as exc:
        return _oauth_error(400, "invalid_grant", str(exc))
    body = _body(request, identity, [fields.get("scope", "")])
    del body["token"]
    if grant_type == "refresh_token":
        body["refresh_token"] = fields["refresh_token"]
    elif fields.get("access_type") == "offline":
        refresh = auth.refresh_token(identity)
        if refresh is not None:
            body["refresh_token"] = refresh
    return web.json_response(body, headers=_NO_STORE)
