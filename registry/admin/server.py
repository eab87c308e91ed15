"""Starting the registry's gRPC admin server beside the OCI API, over the same services."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from nimbus.grpcserver import start_grpc_server
from proto.nimbus.v1 import cache_pb2_grpc as cache_pb_grpc
from proto.nimbus.v1 import registry_pb2_grpc as pb_grpc
from registry.admin.cache import SERVICE_NAME as CACHE
from registry.admin.cache import CacheService
from registry.admin.servicer import SERVICE_NAME, RegistryAdmin
from registry.auth.access import AccessPolicy
from registry.config import RegistryConfig
from registry.lifecycle import Lifecycle
from registry.metrics import RegistryMetrics
from registry.proxy.pulls import Pulls
from registry.services import Services
from registry.services.gc import GarbageCollector, GcStats
from registry.services.inventory import InventoryService


def registry_admin(
    config: RegistryConfig, services: Services, metrics: RegistryMetrics | None = None
) -> RegistryAdmin:
    """The servicer over the OCI API's services, with the inventory and collector it needs."""
    lifecycle = services.lifecycle
    inventory = InventoryService(
        services.driver,
        services.repositories,
        services.manifests,
        lifecycle.pulls.tag_pulled if lifecycle is not None else None,
    )
    gc = GarbageCollector(
        services.driver,
        services.repositories,
        services.manifests,
        grace_seconds=config.gc_grace,
        upload_max_age_seconds=config.gc_upload_max_age,
    )
    if metrics is not None:
        gc.on_finished = _count_gc(metrics)
    if services.lifecycle is not None:
        gc.on_finished = _forget_quotas(services.lifecycle, gc.on_finished)
    policy = None
    if config.auth.enabled:
        # Validated with the configuration; the same rules the OCI API applies.
        policy = AccessPolicy.from_config(config.auth.access, config.auth.groups)
    return RegistryAdmin(services.manifests, inventory, gc, policy, services.lifecycle)


def _count_gc(metrics: RegistryMetrics) -> Callable[[str, GcStats], None]:
    def finished(outcome: str, stats: GcStats) -> None:
        metrics.run_finished("gc", outcome, stats.finished - stats.started)
        if outcome == "completed":
            metrics.gc_bytes_freed.inc(stats.bytes_freed)

    return finished


def _forget_quotas(
    lifecycle: Lifecycle, then: Callable[[str, GcStats], None] | None
) -> Callable[[str, GcStats], None]:
    def finished(outcome: str, stats: GcStats) -> None:
        # Quota figures kept in memory count the data a collection may just have removed.
        lifecycle.collected()
        if then is not None:
            then(outcome, stats)

    return finished


def cache_service(config: RegistryConfig, cache: Pulls | None) -> CacheService:
    """nimbus.v1.Cache over the OCI API's pull-through cache (none without upstreams)."""
    if cache is None or not config.proxy.enabled:
        return CacheService(None)
    from registry.proxy.admin import CacheAdmin
    from registry.proxy.service import ProxyService

    assert isinstance(cache, ProxyService)
    return CacheService(CacheAdmin(cache), config.proxy.max_bytes)


async def start_admin_server(
    config: RegistryConfig,
    services: Services,
    metrics: RegistryMetrics | None = None,
    cache: Pulls | None = None,
) -> grpc.aio.Server:
    admin = registry_admin(config, services, metrics)
    service = (pb_grpc.add_RegistryServicer_to_server, admin, SERVICE_NAME)
    caching = (cache_pb_grpc.add_CacheServicer_to_server, cache_service(config, cache), CACHE)
    return await start_grpc_server(config.grpc(), [service, caching])
