"""The cache's lifecycle metrics, in the registry's collector beside its other cache metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class LifecycleMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.cached_bytes = Gauge(
            "nimbus_proxy_cached_bytes",
            "Bytes of content filled from upstreams and still cached, as of the last sweep",
            registry=registry,
        )
        self.evictions = Counter(
            "nimbus_proxy_evictions_total",
            "Cached blobs and manifests evicted (least recently used past proxy.max_bytes, or "
            "purged), and tags removed (idle past proxy.tag_max_idle, or purged), by kind",
            ["kind"],
            registry=registry,
        )
