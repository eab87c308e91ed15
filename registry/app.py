"""Assembling the registry: storage driver -> services -> HTTP application."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from nimbus import otel
from registry.api.middleware import handle
from registry.api.routes import add_routes
from registry.api.state import METRICS, PROXY, SERVICES
from registry.config import RegistryConfig
from registry.events.sink import EventSink
from registry.metrics import RegistryMetrics
from registry.proxy.pulls import Pulls
from registry.services import Services
from registry.storage.driver import StorageDriver
from registry.storage.filesystem import FilesystemDriver

if TYPE_CHECKING:
    from registry.events.durable import DurableSink
    from registry.proxy.service import ProxyService

# NATS, auth, S3 and the pull-through cache's upstream clients load only when configured:
# they cost tens of MiB each.


def event_sink(config: RegistryConfig, metrics: RegistryMetrics, worker: int = 0) -> DurableSink:
    """Events on NATS JetStream, with an outbox per worker process (each locks its own)."""
    from nimbus.eventstream import StreamSettings
    from registry.events.durable import DurableSink
    from registry.events.outbox import Outbox
    from registry.events.publisher import JetStreamPublisher
    from registry.events.schema import EventSource

    ev = config.events
    outbox_root = Path(ev.outbox_dir) if ev.outbox_dir else Path(config.data_dir) / "_outbox"
    publisher = JetStreamPublisher(
        ev.nats_options(f"nimbus-registry-{ev.site}"),
        StreamSettings(
            max_age=ev.stream_max_age,
            max_bytes=ev.stream_max_bytes,
            max_msgs=ev.stream_max_msgs,
            duplicate_window=ev.duplicate_window,
            replicas=ev.stream_replicas,
        ),
    )
    return DurableSink(
        publisher,
        Outbox(outbox_root / f"worker-{worker}"),
        EventSource.local(ev.site, config.port),
        metrics,
        ev.publish_timeout,
    )


def storage_driver(config: RegistryConfig) -> StorageDriver:
    """The configured storage driver (S3's client libraries load only when it is chosen)."""
    if config.storage.driver == "s3":
        from registry.storage.s3 import S3Driver, S3Settings

        s3 = config.storage.s3
        return S3Driver(
            S3Settings(
                bucket=s3.bucket,
                prefix=s3.prefix,
                region=s3.region,
                endpoint_url=s3.endpoint_url,
                path_style=s3.path_style,
                access_key_id=s3.access_key_id,
                secret_access_key=s3.secret_access_key,
                redirect=s3.redirect,
                multipart_part_size=s3.multipart_part_size,
            )
        )
    return FilesystemDriver(config.data_dir)


def proxy_service(
    config: RegistryConfig, services: Services, metrics: RegistryMetrics
) -> ProxyService:
    """The pull-through cache of the configured upstreams."""
    from registry.proxy.service import ProxyService
    from registry.proxy.upstreams import Router

    proxy = config.proxy
    return ProxyService(
        Router.from_config(proxy),
        services,
        metrics,
        Path(config.data_dir) / "_inflight",
        max_bytes=proxy.max_bytes,
        tag_max_idle=proxy.tag_max_idle,
        evict_interval=proxy.evict_interval,
        usage_flush_interval=proxy.usage_flush_interval,
    )


def create_app(
    config: RegistryConfig, events: EventSink | None = None, worker: int = 0
) -> web.Application:
    middlewares = [handle]
    if config.trust_forwarded_headers:
        from registry.api.forwarded import forwarded

        middlewares.insert(0, forwarded)
    app = web.Application(middlewares=middlewares, handler_args={"max_field_size": 16384})
    driver = storage_driver(config)
    metrics = RegistryMetrics()
    durable: DurableSink | None = None
    if events is None and config.events.enabled:
        events = durable = event_sink(config, metrics, worker)
    services = Services.build(
        driver,
        events,
        emit_blob_events=config.events.blob_uploads,
        emit_pulls=config.events.pulls,
        link_cache_ttl=config.link_cache_ttl,
    )
    services.repositories.catalog_page = config.catalog_page_size
    services.uploads.on_complete = metrics.upload_duration.observe
    app[SERVICES] = services
    app[METRICS] = metrics
    # Local repositories only while no upstream is configured: the cache's upstream clients
    # are not even imported then.
    proxy = proxy_service(config, services, metrics) if config.proxy.enabled else Pulls(services)
    app[PROXY] = proxy
    add_routes(app)
    if config.auth.enabled:
        from registry.api.auth import install as install_auth

        install_auth(app, config)
    if config.proxy.enabled:
        from registry.api.proxy import refuse_cache_writes

        # After authentication: a caller learns the namespace is a cache once it may push.
        app.middlewares.append(refuse_cache_writes)

    async def open_driver(app: web.Application) -> None:
        # Spans of pushes, only when an OTLP endpoint is configured.
        otel.configure("nimbus-registry")
        await driver.open()
        await proxy.start()

    async def close_driver(app: web.Application) -> None:
        await proxy.close()
        await driver.close()
        await asyncio.to_thread(otel.shutdown)

    app.on_startup.append(open_driver)
    app.on_cleanup.append(close_driver)
    if durable is not None:
        sink = durable

        async def start_events(app: web.Application) -> None:
            await sink.start()

        async def stop_events(app: web.Application) -> None:
            await sink.close()

        app.on_startup.append(start_events)
        app.on_cleanup.append(stop_events)
    return app
