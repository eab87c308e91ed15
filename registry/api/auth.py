"""The authentication middleware: who is calling, and may they do what the route does.

It runs inside the error middleware (`registry.api.middleware.handle`), so its refusals are
`OCIError`s rendered like every other error: 401 UNAUTHORIZED with a `WWW-Authenticate`
challenge (Basic, or Bearer naming the token endpoint and the scope to ask for), 403 DENIED,
429 TOOMANYREQUESTS. Credentials and tokens never reach a log line or an error detail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from registry.api.clientcert import certificate_name
from registry.api.login import AUTH, AUTH_CONFIG, basic_challenge, basic_login, quote
from registry.api.request import ACTOR_KEY, VISIBLE_KEY
from registry.api.token import add_token_routes
from registry.auth.scopes import RouteAccess, route_access
from registry.auth.service import (
    ANONYMOUS,
    AuthService,
    Identity,
    Mode,
    Verdict,
    refresh_external_keys,
)
from registry.auth.tokens import TokenError
from registry.config import RegistryConfig
from registry.errors import ErrorCode, OCIError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN_PATH = "/auth/token"
# How often an external issuer's certificates or JWKS are fetched again from a URL.
EXTERNAL_KEYS_REFRESH = 300.0


def token_realm(request: web.Request, configured: str) -> str:
    """The configured token endpoint, or this registry's own as the client reached it."""
    if configured:
        return configured
    return f"{request.scheme}://{request.host}{TOKEN_PATH}"


def challenge(request: web.Request, route: RouteAccess, error: str | None = None) -> str:
    config = request.app[AUTH_CONFIG]
    if request.app[AUTH].mode is Mode.BASIC:
        return basic_challenge(config.realm)
    parts = [
        f'realm="{quote(token_realm(request, config.token.realm))}"',
        f'service="{quote(config.token.service)}"',
    ]
    if route.challenge:
        parts.append(f'scope="{quote(" ".join(r.scope for r in route.challenge))}"')
    if error:
        parts.append(f'error="{error}"')
    return "Bearer " + ",".join(parts)


def _detail(route: RouteAccess) -> list[dict[str, str]]:
    return [
        {"Type": r.type, "Name": r.name, "Action": action}
        for r in route.challenge
        for action in sorted(r.actions)
    ]


def unauthorized(
    request: web.Request, route: RouteAccess, message: str = "", error: str | None = None
) -> OCIError:
    return OCIError(
        ErrorCode.UNAUTHORIZED,
        message,
        detail=_detail(route) or None,
        headers={"WWW-Authenticate": challenge(request, route, error)},
    )


async def _identify(request: web.Request, route: RouteAccess) -> Identity:
    auth = request.app[AUTH]
    header = request.headers.get("Authorization")
    if not header:
        # A client certificate the configured CA verified is a login of its own.
        name = certificate_name(request)
        return Identity(name) if name else ANONYMOUS
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and auth.mode is Mode.TOKEN:
        try:
            return auth.bearer(value.strip())
        except TokenError as exc:
            raise unauthorized(request, route, str(exc), "invalid_token") from None
    # Basic is the scheme of Basic mode; in token mode it also works with the built-in issuer,
    # whose users are ours (handy for curl), though clients follow the Bearer challenge.
    if scheme == "basic" and (auth.mode is Mode.BASIC or auth.issuer is not None):
        return await basic_login(request, value, lambda m: unauthorized(request, route, m))
    raise unauthorized(request, route, f"{auth.mode.value} authentication required")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    route = route_access(match.route.name, request.method, match.get("name"), request.query)
    if route.public:
        return await handler(request)
    identity = await _identify(request, route)
    decision = request.app[AUTH].decide(identity, route)
    if decision.verdict is Verdict.CHALLENGE:
        raise unauthorized(request, route)
    if decision.verdict is Verdict.INSUFFICIENT_SCOPE:
        raise unauthorized(request, route, "token lacks the access needed", "insufficient_scope")
    if decision.verdict is Verdict.DENY:
        raise OCIError(ErrorCode.DENIED, detail=_detail(route) or None)
    request[ACTOR_KEY] = identity.name
    if route.catalog:
        request[VISIBLE_KEY] = decision.visible
    if not decision.mount_allowed:
        # The caller may not read the mount source: upload without mounting, as the spec allows.
        kept = [(k, v) for k, v in request.query.items() if k != "from"]
        request = request.clone(rel_url=request.rel_url.with_query(kept))
    return await handler(request)


def install(app: web.Application, config: RegistryConfig) -> None:
    """Turn authentication on for ``app`` when the configuration asks for it."""
    if not config.auth.enabled:
        return
    app[AUTH_CONFIG] = config.auth
    app.middlewares.append(authenticate)
    token = config.auth.token
    if token.active and not token.external:
        add_token_routes(app, TOKEN_PATH)
    refresher: list[asyncio.Task[None]] = []

    async def start(app: web.Application) -> None:
        app[AUTH] = await AuthService.build(config.auth, config.data_dir)
        if (token.certificate or token.jwks).startswith(("http://", "https://")):
            refresher.append(asyncio.create_task(_refresh_keys(app[AUTH], config)))

    async def stop(app: web.Application) -> None:
        for task in refresher:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


async def _refresh_keys(auth: AuthService, config: RegistryConfig) -> None:
    while True:
        await asyncio.sleep(EXTERNAL_KEYS_REFRESH)
        await refresh_external_keys(auth, config.auth.token.certificate, config.auth.token.jwks)
