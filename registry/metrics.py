"""Prometheus metrics of the registry, one registry object per application."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RegistryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter(
            "nimbus_http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nimbus_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route", "method"],
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "nimbus_http_bytes_received_total",
            "Request body bytes received",
            registry=self.registry,
        )
        self.bytes_out = Counter(
            "nimbus_http_bytes_sent_total", "Response body bytes sent", registry=self.registry
        )
        self.upload_duration = Histogram(
            "nimbus_blob_upload_duration_seconds",
            "Time from the first to the last byte of a completed blob upload",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "nimbus_blob_upload_bytes_total",
            "Bytes of blob uploads completed (chunked or monolithic; mounts move no bytes)",
            registry=self.registry,
        )
        self.uploads = Counter(
            "nimbus_blob_uploads_total",
            "Blob uploads completed",
            registry=self.registry,
        )
        # Maintenance runs of this registry: `job` is gc (and lifecycle, for its own runs),
        # `outcome` completed, dry_run or aborted. See `run_finished`.
        self.maintenance_runs = Counter(
            "nimbus_maintenance_runs_total",
            "Maintenance runs finished, by job (gc, lifecycle) and outcome",
            ["job", "outcome"],
            registry=self.registry,
        )
        self.maintenance_duration = Histogram(
            "nimbus_maintenance_run_duration_seconds",
            "Duration of maintenance runs, by job",
            ["job"],
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 10800),
            registry=self.registry,
        )
        self.gc_bytes_freed = Counter(
            "nimbus_gc_bytes_freed_total",
            "Bytes of blobs deleted by garbage collections (not dry runs)",
            registry=self.registry,
        )
        self.events_published = Counter(
            "nimbus_events_published_total",
            "Events acknowledged by JetStream, by action and path (direct, or via the outbox)",
            ["action", "path"],
            registry=self.registry,
        )
        self.events_outboxed = Counter(
            "nimbus_events_outboxed_total",
            "Events written to the on-disk outbox because NATS did not acknowledge in time",
            registry=self.registry,
        )
        self.events_outbox_depth = Gauge(
            "nimbus_events_outbox_depth",
            "Events in the on-disk outbox waiting for NATS",
            registry=self.registry,
        )
        self.events_outbox_skipped = Counter(
            "nimbus_events_outbox_skipped_total",
            "Unreadable outbox entries (corrupt or oversized) moved aside",
            registry=self.registry,
        )
        self.events_publish_latency = Histogram(
            "nimbus_events_publish_duration_seconds",
            "Time from publishing an event to its JetStream acknowledgement",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

        # The pull-through cache, by upstream; `kind` is manifest or blob.
        self.proxy_hits = Counter(
            "nimbus_proxy_hits_total",
            "Pulls of proxied repositories served from the cache",
            ["upstream", "kind"],
            registry=self.registry,
        )
        self.proxy_misses = Counter(
            "nimbus_proxy_misses_total",
            "Pulls of proxied repositories that fetched from the upstream",
            ["upstream", "kind"],
            registry=self.registry,
        )
        self.proxy_revalidations = Counter(
            "nimbus_proxy_revalidations_total",
            "Cached tags past their time-to-live checked upstream, by result (unchanged, changed)",
            ["upstream", "result"],
            registry=self.registry,
        )
        self.proxy_upstream_errors = Counter(
            "nimbus_proxy_upstream_errors_total",
            "Failed upstream requests, by reason",
            ["upstream", "reason"],
            registry=self.registry,
        )
        self.proxy_stale = Counter(
            "nimbus_proxy_stale_served_total",
            "Cached tags served past their time-to-live because the upstream failed",
            ["upstream"],
            registry=self.registry,
        )
        self.proxy_upstream_bytes = Counter(
            "nimbus_proxy_upstream_bytes_total",
            "Bytes received from upstreams (blob and manifest bodies)",
            ["upstream"],
            registry=self.registry,
        )
        self.proxy_singleflight_waits = Counter(
            "nimbus_proxy_singleflight_waits_total",
            "Requests that waited for, or read, another request's upstream fetch",
            ["upstream", "kind"],
            registry=self.registry,
        )

    def observe_request(
        self, route: str, method: str, status: int, elapsed: float, bytes_in: int, bytes_out: int
    ) -> None:
        """Count one request; the labelled series are looked up once, not on every request."""
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        series[0].inc()
        series[1].observe(elapsed)
        if bytes_in:
            self.bytes_in.inc(bytes_in)
        if bytes_out:
            self.bytes_out.inc(bytes_out)

    def blob_uploaded(self, size: int) -> None:
        self.uploads.inc()
        self.upload_bytes.inc(size)

    def run_finished(self, job: str, outcome: str, seconds: float) -> None:
        """The hook every maintenance job calls once a run ends (gc; lifecycle)."""
        self.maintenance_runs.labels(job, outcome).inc()
        self.maintenance_duration.labels(job).observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)
