"""Behind a TLS-terminating proxy: the scheme and host the client used, from the proxy's
X-Forwarded-Proto and X-Forwarded-Host (installed only with `trust_forwarded_headers`)."""

from __future__ import annotations

from aiohttp import web

from registry.api.middleware import Handler


@web.middleware
async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A chain of proxies appends: the first value is what the client spoke to.
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    if proto in ("http", "https") or host:
        request = request.clone(
            scheme=proto if proto in ("http", "https") else request.scheme,
            host=host or request.host,
        )
    return await handler(request)
