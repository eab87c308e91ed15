"""`/v2/<name>/manifests/<reference>`: HEAD, GET with content negotiation, PUT and DELETE."""

from __future__ import annotations

from aiohttp import web

from nimbus import otel, tracing
from registry.api.request import TRACE_KEY, context, namespace, read_limited, repository_name
from registry.api.state import proxy, services
from registry.services.manifests import MAX_MANIFEST_BYTES, Manifest


def _accept(request: web.Request) -> list[str]:
    return [
        part.strip()
        for value in request.headers.getall("Accept", [])
        for part in value.split(",")
        if part.strip()
    ]


def _headers(manifest: Manifest, warning: str | None = None) -> dict[str, str]:
    headers = {
        "Content-Type": manifest.media_type,
        "Docker-Content-Digest": str(manifest.digest),
        "ETag": f'"{manifest.digest}"',
        "Content-Length": str(manifest.size),
    }
    if warning:
        headers["Warning"] = warning
    return headers


async def get_manifest(request: web.Request) -> web.Response:
    name = repository_name(request)
    served = await proxy(request).manifest(
        name,
        request.match_info["reference"],
        _accept(request),
        context(request),
        namespace(request),
    )
    headers = _headers(served.manifest, served.warning)
    del headers["Content-Length"]
    return web.Response(body=served.manifest.data, headers=headers)


async def head_manifest(request: web.Request) -> web.Response:
    name = repository_name(request)
    # A HEAD is how clients check before pushing: never counted as a pull.
    served = await proxy(request).manifest(
        name,
        request.match_info["reference"],
        _accept(request),
        context(request),
        namespace(request),
        count_pull=False,
    )
    return web.Response(headers=_headers(served.manifest, served.warning))


async def put_manifest(request: web.Request) -> web.Response:
    name = repository_name(request)
    # The push's span (an OTel server span when configured): its context is the traceparent
    # the event carries, so deliveries and copies are its children.
    with otel.push_span(request.headers.get(tracing.HEADER), name) as span:
        request[TRACE_KEY] = span.traceparent
        return await _put_manifest(request, name)


async def _put_manifest(request: web.Request, name: str) -> web.Response:
    data = await read_limited(request, MAX_MANIFEST_BYTES)
    result = await services(request).manifests.put(
        name,
        request.match_info["reference"],
        data,
        request.headers.get("Content-Type", ""),
        context(request),
    )
    headers = {
        "Location": f"/v2/{name}/manifests/{result.digest}",
        "Docker-Content-Digest": str(result.digest),
        "Content-Length": "0",
    }
    if result.subject is not None:
        headers["OCI-Subject"] = str(result.subject)
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request) -> web.Response:
    name = repository_name(request)
    await services(request).manifests.delete(
        name, request.match_info["reference"], context(request)
    )
    return web.Response(status=202)
