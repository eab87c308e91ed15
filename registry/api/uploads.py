"""`/v2/<name>/blobs/uploads/`: open, mount, stream chunks, finish, inspect and cancel."""

from __future__ import annotations

from aiohttp import web

from registry.api.ranges import parse_content_range
from registry.api.request import (
    body_stream,
    content_length,
    context,
    has_body,
    query_value,
    repository_name,
)
from registry.api.state import METRICS, services
from registry.errors import ErrorCode, OCIError
from registry.reference import Digest, validate_name
from registry.services.blobs import BlobInfo
from registry.services.uploads import UploadStatus


def _created(name: str, info: BlobInfo) -> web.Response:
    return web.Response(
        status=201,
        headers={
            "Location": f"/v2/{name}/blobs/{info.digest}",
            "Docker-Content-Digest": str(info.digest),
            "Content-Length": "0",
        },
    )


def _session(status: UploadStatus, code: int) -> web.Response:
    headers = _session_headers(status)
    headers["Content-Length"] = "0"
    return web.Response(status=code, headers=headers)


def _session_headers(status: UploadStatus) -> dict[str, str]:
    return {
        "Location": f"/v2/{status.name}/blobs/uploads/{status.upload_id}",
        "Range": f"0-{max(status.size - 1, 0)}",
        "Docker-Upload-UUID": status.upload_id,
        "OCI-Chunk-Min-Length": "0",
    }


async def start_upload(request: web.Request) -> web.Response:
    name = repository_name(request)
    svc = services(request)
    ctx = context(request)
    mount = query_value(request, "mount")
    if mount is not None:
        digest = Digest.parse(mount)
        source = query_value(request, "from")
        if source is not None:
            info = await svc.blobs.mount(name, digest, validate_name(source), ctx)
            if info is not None:
                return _created(name, info)
        # Not mountable: the spec says to fall back to an ordinary upload session.
        return _session(await svc.uploads.start(name), 202)
    digest_raw = query_value(request, "digest")
    if digest_raw is not None:
        digest = Digest.parse(digest_raw)
        info = await svc.uploads.monolithic(
            name, digest, body_stream(request), content_length(request), ctx
        )
        request.app[METRICS].blob_uploaded(info.size)
        return _created(name, info)
    if has_body(request):
        raise OCIError(ErrorCode.BLOB_UPLOAD_INVALID, "a body needs ?digest= to be monolithic")
    return _session(await svc.uploads.start(name), 202)


def _content_range(request: web.Request) -> tuple[int, int] | None:
    raw = request.headers.get("Content-Range")
    return parse_content_range(raw) if raw else None


async def _add_position(request: web.Request, name: str, error: OCIError) -> None:
    """A refused range tells the client where the upload really is, so it can resume."""
    if error.error is ErrorCode.RANGE_INVALID:
        status = await services(request).uploads.status(name, request.match_info["uuid"])
        error.headers = _session_headers(status)


async def patch_upload(request: web.Request) -> web.Response:
    name = repository_name(request)
    content_range = _content_range(request)
    try:
        status = await services(request).uploads.append(
            name,
            request.match_info["uuid"],
            body_stream(request),
            content_range,
            content_length(request),
        )
    except OCIError as error:
        await _add_position(request, name, error)
        raise
    return _session(status, 202)


async def put_upload(request: web.Request) -> web.Response:
    name = repository_name(request)
    digest_raw = query_value(request, "digest")
    if digest_raw is None:
        raise OCIError(ErrorCode.DIGEST_INVALID, "the digest query parameter is required")
    digest = Digest.parse(digest_raw)
    body = body_stream(request) if has_body(request) else None
    content_range = _content_range(request) if body is not None else None
    try:
        info = await services(request).uploads.complete(
            name,
            request.match_info["uuid"],
            digest,
            body,
            context(request),
            content_length(request),
            content_range,
        )
    except OCIError as error:
        await _add_position(request, name, error)
        raise
    request.app[METRICS].blob_uploaded(info.size)
    return _created(name, info)


async def get_upload(request: web.Request) -> web.Response:
    name = repository_name(request)
    status = await services(request).uploads.status(name, request.match_info["uuid"])
    return _session(status, 204)


async def delete_upload(request: web.Request) -> web.Response:
    name = repository_name(request)
    await services(request).uploads.cancel(name, request.match_info["uuid"])
    return web.Response(status=204)
