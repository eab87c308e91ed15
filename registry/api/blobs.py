"""`/v2/<name>/blobs/<digest>`: HEAD, GET (with a single Range, by sendfile) and DELETE."""

from __future__ import annotations

from aiohttp import web

from nimbus.oci.mediatypes import OCTET_STREAM
from registry.api.ranges import parse_range
from registry.api.request import context, namespace, repository_name
from registry.api.state import proxy, services
from registry.proxy.pulls import BlobStream, FillFailedError
from registry.reference import Digest


def _headers(digest: Digest, size: int) -> dict[str, str]:
    return {
        "Docker-Content-Digest": str(digest),
        "Content-Type": OCTET_STREAM,
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
        "Content-Length": str(size),
    }


async def head_blob(request: web.Request) -> web.Response:
    name = repository_name(request)
    digest = Digest.parse(request.match_info["digest"])
    info = await proxy(request).blob_info(name, digest, namespace(request))
    return web.Response(status=200, headers=_headers(digest, info.size))


def _encrypted(request: web.Request) -> bool:
    """TLS on this connection: no sendfile, and asyncio's fallback for it is about 8x slower
    than the 1 MiB reads and writes of the streamed path (measured: 108 vs 914 MiB/s)."""
    transport = request.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


async def get_blob(request: web.Request) -> web.StreamResponse:
    name = repository_name(request)
    digest = Digest.parse(request.match_info["digest"])
    blobs = services(request).blobs
    info = await proxy(request).blob(name, digest, context(request), namespace(request))
    if isinstance(info, BlobStream):
        return await _stream(request, info)
    url = await blobs.redirect_url(digest)
    if url is not None:
        # The store serves the bytes, and any Range, itself.
        return web.Response(
            status=307, headers={"Location": url, "Docker-Content-Digest": str(digest)}
        )
    headers = _headers(digest, info.size)
    range_header = request.headers.get("Range")
    first, last = 0, info.size - 1
    if range_header and info.size > 0:
        first, last = parse_range(range_header, info.size)
    if info.size == 0:
        # Nothing to range over; FileResponse would answer a Range on it with a bare 416.
        return web.Response(status=200, headers=headers)
    if info.local_path is not None and not _encrypted(request):
        # aiohttp's FileResponse honours the (already validated) Range and uses sendfile.
        del headers["Content-Length"], headers["ETag"]
        return web.FileResponse(info.local_path, headers=headers)
    status = 200
    if range_header and info.size > 0:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{info.size}"
        headers["Content-Length"] = str(last - first + 1)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    async for chunk in blobs.read(digest, first, last - first + 1):
        await response.write(chunk)
    await response.write_eof()
    return response


async def _stream(request: web.Request, blob: BlobStream) -> web.StreamResponse:
    """A blob as it arrives from an upstream; a Range is honoured when the upstream gave the
    size (the range's last byte waits, as the whole blob's does, for the digest check)."""
    headers = _headers(blob.digest, blob.size or 0)
    status, first, last = 200, 0, None
    range_header = request.headers.get("Range")
    if blob.size is None:
        del headers["Content-Length"]
    elif range_header and blob.size > 0:
        first, last = parse_range(range_header, blob.size)
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{blob.size}"
        headers["Content-Length"] = str(last - first + 1)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    try:
        async for chunk in blob.read(first, last):
            await response.write(chunk)
    except FillFailedError:
        # The headers are out: cutting the connection is how the client learns of it.
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def delete_blob(request: web.Request) -> web.Response:
    name = repository_name(request)
    digest = Digest.parse(request.match_info["digest"])
    await services(request).blobs.delete(name, digest, context(request))
    return web.Response(status=202, headers={"Docker-Content-Digest": str(digest)})
