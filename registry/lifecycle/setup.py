"""Installing the lifecycle layer into a registry application, from its configuration."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Gauge

from registry.api.state import METRICS, SERVICES
from registry.config import RegistryConfig
from registry.lifecycle import Lifecycle, LifecycleSettings
from registry.lifecycle.quotas import QuotaUsage
from registry.lifecycle.retention import RetentionService
from registry.lifecycle.rules import Policies
from registry.lifecycle.schedule import parse_schedule
from registry.lifecycle.scrub import ScrubService
from registry.metrics import RegistryMetrics


def _gauges(metrics: RegistryMetrics, lifecycle: Lifecycle) -> None:
    labels = ["repository", "rule"]
    used = Gauge(
        "nimbus_quota_used_bytes",
        "Bytes a repository under a quota holds (each blob and manifest once), when last seen",
        labels,
        registry=metrics.registry,
    )
    limit = Gauge(
        "nimbus_quota_limit_bytes",
        "Byte limit of a repository's quota",
        labels,
        registry=metrics.registry,
    )
    tags = Gauge(
        "nimbus_quota_used_tags",
        "Tags of a repository under a quota",
        labels,
        registry=metrics.registry,
    )

    def report(usage: QuotaUsage) -> None:
        used.labels(usage.repository, usage.rule).set(usage.bytes_used)
        limit.labels(usage.repository, usage.rule).set(usage.bytes_limit)
        tags.labels(usage.repository, usage.rule).set(usage.tags_used)

    lifecycle.on_usage.append(report)


async def install_lifecycle(config: RegistryConfig, app: web.Application) -> Lifecycle:
    services = app[SERVICES]
    settings = config.lifecycle
    lifecycle = Lifecycle(
        services.driver,
        LifecycleSettings(
            seed=Policies.parse(settings.policies) if settings.policies else None,
            reload_interval=settings.reload_interval,
            pull_flush_interval=settings.pull_flush_interval,
            retention_interval=settings.retention_interval,
            lease_ttl=settings.lease_ttl,
            scrub_schedule=(
                parse_schedule(settings.scrub_schedule, "lifecycle.scrub_schedule")
                if settings.scrub_schedule
                else None
            ),
            scrub_rate=settings.scrub_rate,
        ),
    )
    lifecycle.retention = RetentionService(
        services.driver,
        services.repositories,
        services.manifests,
        lifecycle.store,
        lifecycle.pulls,
        settings.lease_ttl,
    )
    lifecycle.scrub = ScrubService(
        services.driver, services.repositories, settings.scrub_rate, settings.lease_ttl
    )
    _gauges(app[METRICS], lifecycle)
    services.install_lifecycle(lifecycle)
    await lifecycle.start()
    return lifecycle
