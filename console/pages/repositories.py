"""The repositories list and one repository's tags."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from console.guards import CONFIG, require_admin
from console.render import render
from console.sessions import current
from console.state import CATALOG


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/repositories")


async def repositories(request: web.Request) -> web.Response:
    q = request.query.get("q", "").strip()[:200]
    page = await request.app[CATALOG].repositories(
        current(request), q, request.query.get("sort", "name"), request.query.get("page", "")
    )
    return render(request, "repositories.html", page=page)


async def repository(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    catalog, session = request.app[CATALOG], current(request)
    tags, next_token = await catalog.tags(session, name, request.query.get("page", ""))
    platforms = await catalog.platforms(session, name, tags)
    return render(
        request,
        "repository.html",
        name=name,
        tags=tags,
        platforms=platforms,
        next_token=next_token,
        host=request.app[CONFIG].pull_host,
        notice=request.query.get("deleted", ""),
    )


async def delete_tag(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    form = await request.post()
    name, tag = str(form.get("repository", "")), str(form.get("tag", ""))
    await request.app[CATALOG].delete_tag(name, tag)
    raise web.HTTPSeeOther("/repository?" + urlencode({"name": name, "deleted": tag}))
