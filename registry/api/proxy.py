"""Pushes and deletes in a repository an upstream serves are refused (it is a cache)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from registry.api.request import namespace
from registry.api.state import proxy
from registry.auth.scopes import PULL, route_access

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def refuse_cache_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    name = match.get("name")
    if name is not None:
        route = route_access(match.route.name, request.method, name, request.query)
        if any(PULL not in need.actions for need in route.needs):
            proxy(request).check_writable(name, namespace(request))
    return await handler(request)
