"""Edge concerns: request ids, OCI errors rendered once, metrics and the access log."""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from registry.api.request import REQUEST_ID_KEY
from registry.api.state import METRICS
from registry.errors import ErrorCode, OCIError
from registry.storage.driver import PathNotFoundError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("nimbus.registry")
REQUEST_ID_HEADER = "X-Request-Id"
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}

# Request ids: a random per-process prefix and a counter; uuid4 per request costs a syscall.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


def error_response(error: OCIError, request_id: str) -> web.Response:
    headers = {**API_VERSION, REQUEST_ID_HEADER: request_id, **(error.headers or {})}
    return web.Response(
        status=error.status,
        body=json.dumps(error.to_json()).encode(),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
    request[REQUEST_ID_KEY] = request_id
    started = time.perf_counter()
    route = request.match_info.route.name or "unmatched"
    try:
        response = await handler(request)
    except OCIError as error:
        response = error_response(error, request_id)
    except ConnectionResetError:
        # The client left mid-body; the service already undid the partial write.
        log.info("client disconnected", extra={"request_id": request_id, "path": request.path})
        response = error_response(
            OCIError(ErrorCode.BLOB_UPLOAD_INVALID, "connection lost before the body ended"),
            request_id,
        )
    except PathNotFoundError as error:
        # A race with a concurrent delete: the object went away between two reads.
        response = error_response(OCIError(ErrorCode.NAME_UNKNOWN, str(error)), request_id)
    except web.HTTPException as exc:
        if exc.status == 404 and route == "unmatched":
            response = error_response(OCIError(ErrorCode.NAME_UNKNOWN, "no such route"), request_id)
        elif exc.status == 405:
            response = error_response(
                OCIError(
                    ErrorCode.UNSUPPORTED,
                    f"{request.method} is not allowed here",
                    headers={"Allow": exc.headers.get("Allow", "")},
                ),
                request_id,
            )
        else:
            raise
    if not response.prepared:
        response.headers.setdefault(REQUEST_ID_HEADER, request_id)
        response.headers.setdefault("Docker-Distribution-API-Version", "registry/2.0")
    request.app[METRICS].observe_request(
        route,
        request.method,
        response.status,
        time.perf_counter() - started,
        request.content_length or 0,
        response.content_length or 0,
    )
    return response


class JSONAccessLogger(AbstractAccessLogger):
    """One JSON object a line per request, with the request id.

    Written straight to stderr: the logging module's record machinery would cost more than
    serving a cached manifest.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, elapsed: float) -> None:
        now = time.time()
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + f".{int(now % 1 * 1000):03d}Z",
            "level": "info",
            "logger": self.logger.name,
            "msg": "request",
            "request_id": request.get(REQUEST_ID_KEY, ""),
            "remote": request.remote,
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "bytes_out": response.body_length,
            "duration_ms": round(elapsed * 1000, 3),
            "useragent": request.headers.get("User-Agent", ""),
        }
        sys.stderr.write(json.dumps(entry) + "\n")
