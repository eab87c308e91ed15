"""Who asked for a change: carried from the HTTP edge into services and their events."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str = ""
    addr: str = ""
    host: str = ""
    # How the client reached the registry ("https" over TLS or behind a TLS proxy).
    scheme: str = "http"
    method: str = ""
    useragent: str = ""
    actor: str = ""
    # Site where the write first happened; set on replicated writes so sites never ping-pong.
    origin_site: str = ""
    # W3C traceparent of this request's span (a child of the client's, or a new trace).
    traceparent: str = ""


INTERNAL = RequestContext(request_id="internal", method="INTERNAL")
