"""The console's aiohttp application: middlewares, routes, and the services it carries."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from aiohttp import web

from console import render as rendering
from console.admin import Operations
from console.catalog import Catalog, NotFound
from console.clients import GrpcClients, ServiceUnavailable
from console.config import ConsoleConfig
from console.csrf import csrf_middleware
from console.guards import CONFIG, AdminRequired
from console.handlers import Handler
from console.oci import RegistryClients
from console.pages import auth, events, manifest, operations, repositories, webhooks
from console.pages import lifecycle as lifecycle_pages
from console.render import ENV, SETTINGS, render
from console.security import security_headers
from console.sessions import CODEC, SessionCodec, current, session_middleware
from console.state import CATALOG, GRPC, OPERATIONS, REGISTRIES

log = logging.getLogger("nimbus.console")
STATIC = Path(__file__).parent / "static"


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except NotFound:
        return render(request, "error.html", 404, title="Not found", detail="Nothing here.")
    except AdminRequired:
        signed = current(request).signed_in
        detail = (
            "This page is for the operator: your sign-in does not give it."
            if signed
            else "This page is for the operator: sign in with the admin token."
        )
        return render(request, "error.html", 403, title="Admin only", detail=detail)
    except ServiceUnavailable as error:
        return render(request, "error.html", 503, title="Not available", detail=str(error))
    except grpc.aio.AioRpcError as error:
        code = error.code()
        if code is grpc.StatusCode.NOT_FOUND:
            return render(request, "error.html", 404, title="Not found", detail=error.details())
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            return render(request, "error.html", 400, title="Not accepted", detail=error.details())
        log.warning("gRPC call failed", extra={"code": code.name, "path": request.path})
        away = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        status = 503 if code in away else 502
        return render(
            request,
            "error.html",
            status,
            title="A service did not answer",
            detail=f"{code.name}: {error.details()}",
        )
    except Exception:
        log.exception("page failed", extra={"path": request.path})
        return render(request, "error.html", 500, title="Something went wrong", detail="")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build_app(config: ConsoleConfig) -> web.Application:
    app = web.Application(
        middlewares=[security_headers, session_middleware, error_pages, csrf_middleware],
        client_max_size=1024 * 1024,
    )
    app[CONFIG] = config
    app[CODEC] = SessionCodec(config.secret, config.session_ttl)
    app[ENV] = rendering.environment()
    grpc_clients = GrpcClients(config)
    registries = RegistryClients(config)
    app[GRPC] = grpc_clients
    app[REGISTRIES] = registries
    app[CATALOG] = Catalog(grpc_clients, registries)
    app[OPERATIONS] = Operations(grpc_clients)
    app[SETTINGS] = {
        "admin_open": not config.admin_token,
        "replication": bool(config.replicator_grpc),
        "host": config.pull_host,
    }

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        await grpc_clients.close()
        await registries.close()

    app.cleanup_ctx.append(lifecycle)
    r = app.router
    r.add_get("/", repositories.index)
    r.add_get("/healthz", healthz)
    r.add_get("/signin", auth.signin_form)
    r.add_post("/signin", auth.signin)
    r.add_post("/signout", auth.signout)
    r.add_get("/repositories", repositories.repositories)
    r.add_get("/repository", repositories.repository)
    r.add_post("/repository/delete-tag", repositories.delete_tag)
    r.add_get("/manifest", manifest.manifest)
    webhooks.routes(r)
    events.routes(r)
    operations.routes(r)
    lifecycle_pages.routes(r)  # aliased: build_app's cleanup context is named lifecycle
    r.add_static("/static/", STATIC, append_version=True)
    return app
