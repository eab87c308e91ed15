"""One manifest: media type, layers and their share, the image config, an index's platforms,
referrers by artifact type, and (for the operator) where it is replicated."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from console.guards import CONFIG, admin_open
from console.render import render
from console.sessions import current
from console.state import CATALOG, OPERATIONS


async def manifest(request: web.Request) -> web.Response:
    repository = request.query.get("repository", "")
    reference = request.query.get("reference", "")
    session = current(request)
    view = await request.app[CATALOG].manifest(session, repository, reference)
    ops = request.app[OPERATIONS]
    # Peers are the operator's to see; the replicator asks each with the peer's credentials.
    located: tuple[list[Any], str] | None = None
    if ops.replication and (session.admin or admin_open(request)):
        located = await ops.locate(repository, view.info.digest)
    return render(
        request,
        "manifest.html",
        repository=repository,
        reference=reference,
        view=view,
        located=located,
        host=request.app[CONFIG].pull_host,
    )
