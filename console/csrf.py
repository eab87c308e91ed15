"""CSRF: every unsafe request carries the session's token (a form field or a header), and a
browser's Origin, when it sends one, must be this console's."""

from __future__ import annotations

import hmac

from aiohttp import web

from console.handlers import Handler
from console.sessions import current

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser, or one that sends no Origin on same-origin posts
    return origin == f"{request.scheme}://{request.host}"


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in SAFE:
        return await handler(request)
    if request.headers.get("Sec-Fetch-Site") == "cross-site" or not _same_origin(request):
        raise web.HTTPForbidden(text="cross-site request refused")
    given = request.headers.get(HEADER, "")
    if not given and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        given = str(form.get(FIELD, ""))
    expected = current(request).csrf
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and try again")
    return await handler(request)
