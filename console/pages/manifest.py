"""One manifest: media type, layers and their share, the image config, an index's platforms,
referrers by artifact type."""

from __future__ import annotations

from aiohttp import web

from console.guards import CONFIG
from console.render import render
from console.sessions import current
from console.state import CATALOG


async def manifest(request: web.Request) -> web.Response:
    repository = request.query.get("repository", "")
    reference = request.query.get("reference", "")
    view = await request.app[CATALOG].manifest(current(request), repository, reference)
    return render(
        request,
        "manifest.html",
        repository=repository,
        reference=reference,
        view=view,
        host=request.app[CONFIG].pull_host,
    )
