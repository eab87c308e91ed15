"""Typed keys for what the application carries between handlers."""

from __future__ import annotations

from aiohttp import web

from registry.metrics import RegistryMetrics
from registry.proxy.service import ProxyService
from registry.services import Services

SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", RegistryMetrics)
# Pulls consult it first: it serves local repositories as they are and proxied ones from
# their upstream's cache.
PROXY = web.AppKey("proxy", ProxyService)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def proxy(request: web.Request) -> ProxyService:
    return request.app[PROXY]
