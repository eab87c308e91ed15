"""Reading the parts of an HTTP request that handlers share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import unquote

from aiohttp import web

from nimbus import tracing
from nimbus.oci.headers import ORIGIN_SITE_HEADER
from registry.api.clientcert import certificate_name
from registry.context import RequestContext
from registry.errors import ErrorCode, OCIError
from registry.reference import validate_name

REQUEST_ID_KEY = "nimbus.request_id"
TRACE_KEY = "nimbus.traceparent"
ACTOR_KEY = "nimbus.actor"
# Set by authentication: which repositories the caller may see in `_catalog`.
VISIBLE_KEY = "nimbus.catalog_visible"


def catalog_filter(request: web.Request) -> Callable[[str], bool] | None:
    """Which repositories the caller may see in `_catalog` (None: all of them)."""
    visible: Callable[[str], bool] | None = request.get(VISIBLE_KEY)
    return visible


def repository_name(request: web.Request) -> str:
    return validate_name(request.match_info["name"])


def request_span(request: web.Request) -> str:
    """This request's span, once per request: a child of the client's `traceparent`, or the
    root of a new trace."""
    span: str | None = request.get(TRACE_KEY)
    if span is None:
        span = request[TRACE_KEY] = tracing.child(request.headers.get(tracing.HEADER))
    return span


def context(request: web.Request) -> RequestContext:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    addr = f"{peer[0]}:{peer[1]}" if peer else (request.remote or "")
    return RequestContext(
        request_id=request.get(REQUEST_ID_KEY, ""),
        addr=addr,
        host=request.host,
        scheme=request.scheme,
        method=request.method,
        useragent=request.headers.get("User-Agent", ""),
        actor=request.get(ACTOR_KEY, "") or certificate_name(request),
        origin_site=request.headers.get(ORIGIN_SITE_HEADER, ""),
        traceparent=request_span(request),
    )


def content_length(request: web.Request) -> int | None:
    raw = request.headers.get("Content-Length")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise OCIError(ErrorCode.SIZE_INVALID, "Content-Length is not a number") from None
    if value < 0:
        raise OCIError(ErrorCode.SIZE_INVALID, "Content-Length is negative")
    return value


def has_body(request: web.Request) -> bool:
    length = request.headers.get("Content-Length")
    if length is not None:
        return length.strip() != "0"
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


async def body_stream(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


async def read_limited(request: web.Request, limit: int) -> bytes:
    """Read a small body whole, refusing it once it passes ``limit`` bytes."""
    length = content_length(request)
    if length is not None and length > limit:
        raise OCIError(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {limit} bytes")
    data = bytearray()
    async for chunk in request.content.iter_any():
        data += chunk
        if len(data) > limit:
            raise OCIError(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {limit} bytes")
    return bytes(data)


def query_value(request: web.Request, key: str) -> str | None:
    """A query parameter, the first if repeated (as Distribution reads it), or None if empty.

    No value of this API (digests, media types, names) holds a space, so `+` stays `+`
    rather than form-decoding to a space: clients differ in whether they percent-encode it.
    """
    for pair in request.rel_url.raw_query_string.split("&"):
        raw_key, _, raw_value = pair.partition("=")
        if unquote(raw_key) == key:
            return unquote(raw_value) or None
    return None


def namespace(request: web.Request) -> str | None:
    """containerd's `?ns=HOST`: the registry a mirror request is meant for."""
    return query_value(request, "ns")
