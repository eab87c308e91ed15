"""Prometheus metrics of the replicator, one registry object per process.

Labels stay bounded: the peer (as many as there are peers), an outcome or a failure kind from a
fixed set; never a repository or a digest.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nimbus.metrics import render

# Outcomes of one change applied at a peer: an image (or tag) written there; nothing to write
# (the peer had it all); a delete applied; failed for good (a failure record).
COPIED, PRESENT, DELETED, FAILED = "copied", "present", "deleted", "failed"
RECONCILED, RECONCILE_FAILED = "completed", "failed"

# From the push to the change at the peer: sub-second when all is well, hours after an outage.
LAG_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400,
)  # fmt: skip


class ReplicatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.copies = Counter(
            "nimbus_replicator_copies_total",
            "Changes applied to peers, by peer and outcome (copied, present, deleted, failed)",
            ["peer", "outcome"],
            registry=r,
        )
        self.bytes_copied = Counter(
            "nimbus_replicator_bytes_copied_total",
            "Blob and manifest bytes written to peers",
            ["peer"],
            registry=r,
        )
        self.lag = Histogram(
            "nimbus_replicator_lag_seconds",
            "From the event (the push or delete at this site) to its change applied at the peer",
            ["peer"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.failures = Counter(
            "nimbus_replicator_failures_total",
            "Changes that failed for good (failure records), by peer and kind "
            "(peer-unreachable, peer-refused, internal)",
            ["peer", "kind"],
            registry=r,
        )
        self.retries = Counter(
            "nimbus_replicator_retries_total",
            "Attempts that failed in a way worth retrying (peer unreachable or busy), by peer",
            ["peer"],
            registry=r,
        )
        self.reconcile_runs = Counter(
            "nimbus_replicator_reconcile_runs_total",
            "Periodic reconciles this replica ran, by peer and outcome (completed, failed)",
            ["peer", "outcome"],
            registry=r,
        )
        self.backlog = Gauge(
            "nimbus_replicator_backlog",
            "Events of this site the peer's consumer has not handed out yet",
            ["peer"],
            registry=r,
        )
        self.in_flight = Gauge(
            "nimbus_replicator_in_flight",
            "Events handed out for the peer and not yet acknowledged (being copied or retried)",
            ["peer"],
            registry=r,
        )

    def applied(self, peer: str, outcome: str, bytes_: int = 0, lag: float | None = None) -> None:
        """One change at a peer; `lag` in seconds since its event, for changes from events."""
        self.copies.labels(peer, outcome).inc()
        if bytes_:
            self.bytes_copied.labels(peer).inc(bytes_)
        if lag is not None:
            self.lag.labels(peer).observe(max(0.0, lag))

    def failed(self, peer: str, kind: str) -> None:
        self.copies.labels(peer, FAILED).inc()
        self.failures.labels(peer, kind).inc()

    def retried(self, peer: str) -> None:
        self.retries.labels(peer).inc()

    def reconciled(self, peer: str, outcome: str) -> None:
        self.reconcile_runs.labels(peer, outcome).inc()

    def peer_backlog(self, peer: str, pending: int, unacked: int) -> None:
        self.backlog.labels(peer).set(pending)
        self.in_flight.labels(peer).set(unacked)

    def forget(self, peer: str) -> None:
        """A peer deleted: its series go, so label values stay bounded by the peers there are."""
        for family in (
            self.copies,
            self.bytes_copied,
            self.lag,
            self.failures,
            self.retries,
            self.reconcile_runs,
            self.backlog,
            self.in_flight,
        ):
            for labels in list(family._metrics):
                if labels[0] == peer:
                    family.remove(*labels)

    def render(self) -> bytes:
        return render(self.registry)
