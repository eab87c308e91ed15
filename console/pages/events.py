"""The live events feed: the notifier's WatchEvents stream as server-sent events."""

from __future__ import annotations

import asyncio
import json

import grpc
from aiohttp import web
from google.protobuf.json_format import MessageToDict

from console.admin import ACTIONS
from console.guards import require_admin
from console.render import render
from console.state import OPERATIONS

# A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0


def _filters(request: web.Request) -> tuple[list[str], list[str]]:
    actions = [a for a in request.query.getall("action", []) if a in ACTIONS]
    repos = [r for r in request.query.get("repository", "").split(",") if r.strip()]
    return actions, [r.strip() for r in repos]


async def events_page(request: web.Request) -> web.Response:
    require_admin(request)
    actions, repos = _filters(request)
    # The latest events are in the HTML (readable without JavaScript); the feed adds to them.
    unavailable = ""
    try:
        recent = await request.app[OPERATIONS].recent_events(actions, repos)
    except grpc.aio.AioRpcError as error:
        if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
            raise
        recent, unavailable = [], error.code().name
    return render(
        request,
        "events.html",
        actions=ACTIONS,
        chosen=actions,
        repository=",".join(repos),
        recent=recent,
        unavailable=unavailable,
    )


async def events_stream(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    actions, repos = _filters(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b": connected\n\n")
    stream = request.app[OPERATIONS].watch(actions, repos).__aiter__()
    try:
        while True:
            try:
                event = await asyncio.wait_for(stream.__anext__(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            body = json.dumps(MessageToDict(event, preserving_proto_field_name=False))
            await response.write(f"event: registry\nid: {event.id}\ndata: {body}\n\n".encode())
    except StopAsyncIteration:
        pass
    except grpc.aio.AioRpcError as error:
        await response.write(f"event: failure\ndata: {json.dumps(error.code().name)}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return response


def routes(r: web.UrlDispatcher) -> None:
    r.add_get("/events", events_page)
    r.add_get("/events/stream", events_stream)
