"""`GET /v2/`: the version check every client starts with; and `/metrics`."""

from __future__ import annotations

from aiohttp import web

from registry.api.state import METRICS
from registry.metrics import CONTENT_TYPE

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


async def version_check(request: web.Request) -> web.Response:
    return web.json_response({}, headers=API_VERSION_HEADER)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
