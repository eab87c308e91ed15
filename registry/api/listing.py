"""Tag lists and the catalog, paginated with `n`, `last` and a `Link` header."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from registry.api.request import catalog_filter, namespace, query_value, repository_name
from registry.api.state import proxy, services
from registry.services.repositories import Page, parse_page_size


def _response(
    path: str,
    key: str,
    page: Page,
    n: int | None,
    extra: dict[str, str],
    warning: str | None = None,
) -> web.Response:
    headers = {"Warning": warning} if warning else {}
    if page.next_last is not None:
        query = urlencode({"n": n if n is not None else len(page.items), "last": page.next_last})
        headers["Link"] = f'<{path}?{query}>; rel="next"'
    return web.json_response({**extra, key: page.items}, headers=headers)


async def list_tags(request: web.Request) -> web.Response:
    name = repository_name(request)
    n = parse_page_size(request.query.get("n"))
    served = await proxy(request).tags(name, n, query_value(request, "last"), namespace(request))
    path = f"/v2/{name}/tags/list"
    return _response(path, "tags", served.page, n, {"name": name}, served.warning)


async def catalog(request: web.Request) -> web.Response:
    n = parse_page_size(request.query.get("n"))
    page = await services(request).repositories.catalog(
        n, query_value(request, "last"), visible=catalog_filter(request)
    )
    return _response("/v2/_catalog", "repositories", page, n, {})
