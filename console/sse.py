"""Server-sent events: the live parts of pages (events feed, backlog, sync and GC progress).

A stream is a `text/event-stream` response; `relay` writes each item of an async iterator as one
event, a comment line when nothing came for a while (proxies close idle streams), and a
`failure` event when the gRPC stream behind it fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from aiohttp import web

T = TypeVar("T")

KEEPALIVE_SECONDS = 15.0
MEDIA_TYPE = "text/event-stream"


def wanted(request: web.Request) -> bool:
    """Whether the caller (the page's script) asked for a stream instead of a page."""
    return MEDIA_TYPE in request.headers.get("Accept", "")


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": MEDIA_TYPE,
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b": connected\n\n")
    return response


async def send(response: web.StreamResponse, event: str, data: Any, event_id: str = "") -> None:
    lines = [f"event: {event}"]
    if event_id:
        lines.append(f"id: {event_id}")
    # json.dumps never writes a newline, so the data is one line.
    lines.append(f"data: {json.dumps(data)}")
    await response.write(("\n".join(lines) + "\n\n").encode())


async def relay(
    request: web.Request,
    items: AsyncIterator[T],
    event: str,
    encode: Callable[[T], Any],
    event_id: Callable[[T], str] | None = None,
    keepalive: float = KEEPALIVE_SECONDS,
) -> web.StreamResponse:
    """Each item as one `event`; returns when the items end or the browser goes."""
    response = await open_stream(request)
    iterator = items.__aiter__()
    try:
        while True:
            try:
                item = await asyncio.wait_for(anext(iterator), keepalive)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            await send(response, event, encode(item), event_id(item) if event_id else "")
    except StopAsyncIteration:
        pass
    except grpc.aio.AioRpcError as error:
        await send(response, "failure", f"{error.code().name}: {error.details()}")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
    return response
