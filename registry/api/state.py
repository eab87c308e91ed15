"""Typed keys for what the application carries between handlers."""

from __future__ import annotations

from aiohttp import web

from registry.metrics import RegistryMetrics
from registry.proxy.pulls import Pulls
from registry.services import Services

SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", RegistryMetrics)
# Pulls consult it first: it serves local repositories as they are and, when upstreams are
# configured (a ProxyService), proxied ones from their upstream's cache.
PROXY = web.AppKey("proxy", Pulls)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def proxy(request: web.Request) -> Pulls:
    return request.app[PROXY]
