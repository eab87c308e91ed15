"""Typed keys for what the application carries between handlers."""

from __future__ import annotations

from aiohttp import web

from registry.metrics import RegistryMetrics
from registry.services import Services

SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", RegistryMetrics)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
