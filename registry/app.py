"""Assembling the registry: storage driver -> services -> HTTP application."""

from __future__ import annotations

from aiohttp import web

from registry.api.middleware import handle
from registry.api.routes import add_routes
from registry.api.state import METRICS, SERVICES
from registry.config import RegistryConfig
from registry.events.sink import EventSink
from registry.metrics import RegistryMetrics
from registry.services import Services
from registry.storage.filesystem import FilesystemDriver


def create_app(config: RegistryConfig, events: EventSink | None = None) -> web.Application:
    app = web.Application(middlewares=[handle], handler_args={"max_field_size": 16384})
    driver = FilesystemDriver(config.data_dir)
    services = Services.build(
        driver,
        events,
        emit_blob_events=config.events.blob_uploads,
        emit_pulls=config.events.pulls,
        link_cache_ttl=config.link_cache_ttl,
    )
    services.repositories.catalog_page = config.catalog_page_size
    metrics = RegistryMetrics()
    services.uploads.on_complete = metrics.upload_duration.observe
    app[SERVICES] = services
    app[METRICS] = metrics
    add_routes(app)

    async def close_driver(app: web.Application) -> None:
        await driver.close()

    app.on_cleanup.append(close_driver)
    return app
