"""The caller named by a verified TLS client certificate (its subject's common name)."""

from __future__ import annotations

from aiohttp import web


def certificate_name(request: web.Request) -> str:
    # The transport reports a peer certificate only once the CA verified it.
    peercert = request.transport.get_extra_info("peercert") if request.transport else None
    if not peercert:
        return ""
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""
