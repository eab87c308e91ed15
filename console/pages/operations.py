"""Replication (peers, backlog, failures, retry, sync), garbage collection and health."""

from __future__ import annotations

from aiohttp import web

from console import sse
from console.admin import gc_fields, progress_fields
from console.guards import require_admin
from console.render import render
from console.state import OPERATIONS, REGISTRIES

# How often the live backlog asks the replicator for its status.
STATUS_INTERVAL_SECONDS = 1.0


async def replication(request: web.Request) -> web.Response:
    require_admin(request)
    ops = request.app[OPERATIONS]
    peers = await ops.peers()
    failures = await ops.failures("")
    return render(
        request, "replication.html", peers=peers, failures=failures, result=None, sync=None
    )


async def retry(request: web.Request) -> web.Response:
    require_admin(request)
    form = await request.post()
    ops = request.app[OPERATIONS]
    result = await ops.retry(str(form.get("peer", "")), str(form.get("id", "")))
    peers, failures = await ops.peers(), await ops.failures("")
    return render(
        request, "replication.html", peers=peers, failures=failures, result=result, sync=None
    )


async def status_stream(request: web.Request) -> web.StreamResponse:
    """Every peer's backlog, in flight, failures and copied, as they change."""
    require_admin(request)
    feed = request.app[OPERATIONS].status_feed(STATUS_INTERVAL_SECONDS)
    return await sse.relay(request, feed, "status", lambda peers: {"peers": peers})


async def sync(request: web.Request) -> web.StreamResponse:
    """A sync: its progress streamed to the page's script, or the page once it is done."""
    require_admin(request)
    form = await request.post()
    peer, repository = str(form.get("peer", "")), str(form.get("repository", "")).strip()
    ops = request.app[OPERATIONS]
    if sse.wanted(request):
        return await sse.relay(
            request, ops.sync_progress(peer, repository), "progress", progress_fields
        )
    progress = await ops.sync(peer, repository)
    return render(request, "sync.html", peer=peer, repository=repository, progress=progress)


async def gc_page(request: web.Request) -> web.Response:
    require_admin(request)
    stats = await request.app[OPERATIONS].stats()
    return render(request, "gc.html", stats=stats, run=None, dry_run=True)


async def gc_run(request: web.Request) -> web.StreamResponse:
    """A collection (or dry run): its progress streamed to the page's script, or the page."""
    require_admin(request)
    form = await request.post()
    dry_run = form.get("mode") != "run"
    untagged = form.get("delete_untagged") == "on"
    ops = request.app[OPERATIONS]
    if sse.wanted(request):
        return await sse.relay(request, ops.collect_progress(dry_run, untagged), "gc", gc_fields)
    run = await ops.collect(dry_run, untagged)
    stats = await ops.stats()
    return render(request, "gc.html", stats=stats, run=run, dry_run=dry_run)


async def health(request: web.Request) -> web.Response:
    require_admin(request)
    services = await request.app[OPERATIONS].health()
    try:
        needs_login = await request.app[REGISTRIES].requires_login()
        oci = "SERVING (authentication on)" if needs_login else "SERVING"
    except Exception as error:
        oci = f"UNREACHABLE: {type(error).__name__}"
    return render(request, "health.html", services=services, oci=oci)


def routes(r: web.UrlDispatcher) -> None:
    r.add_get("/replication", replication)
    r.add_post("/replication/retry", retry)
    r.add_get("/replication/status", status_stream)
    r.add_post("/replication/sync", sync)
    r.add_get("/gc", gc_page)
    r.add_post("/gc", gc_run)
    r.add_get("/health", health)
