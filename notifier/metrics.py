"""Prometheus metrics of the notifier, one registry object per process.

Labels stay bounded: the webhook id (as many as there are webhooks), an outcome or a state from
a fixed set; never a repository, a digest or a URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nimbus.metrics import StateGauge, render

# Attempt outcomes: answered 2xx; failed in a way another attempt may fix (timeout, connection
# error, 408, 429, 5xx); refused (any other 4xx, which retrying will not change).
SUCCEEDED, FAILED, REFUSED = "succeeded", "failed", "refused"
# Final outcomes of a delivery.
DELIVERED, DEAD = "succeeded", "dead"
BREAKER_STATES = ("closed", "open", "half-open")

# From a receiver's fastest answers to its timeout.
ATTEMPT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# From the push to the receiver's 2xx: milliseconds when all is well, hours through retries.
DELIVERY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400,
)  # fmt: skip


class NotifierMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = Counter(
            "nimbus_notifier_deliveries_total",
            "Deliveries finished, by webhook and outcome (succeeded, dead)",
            ["webhook", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "nimbus_notifier_attempts_total",
            "HTTP attempts of deliveries, by webhook and outcome (succeeded, failed, refused)",
            ["webhook", "outcome"],
            registry=r,
        )
        self.attempt_duration = Histogram(
            "nimbus_notifier_attempt_duration_seconds",
            "One HTTP attempt, from sending the request to the end of the answer (or the error)",
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.delivery_latency = Histogram(
            "nimbus_notifier_delivery_latency_seconds",
            "From the event (the push) to the receiver's 2xx, retries included",
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "nimbus_notifier_requests_in_flight",
            "HTTP requests to receivers in flight now",
            registry=r,
        )
        self.dead_letters = Counter(
            "nimbus_notifier_dead_letters_total",
            "Deliveries given up (attempts or age exhausted, refused, or failed inside the "
            "notifier), by webhook",
            ["webhook"],
            registry=r,
        )
        self.events_held = Gauge(
            "nimbus_notifier_events_held",
            "Events this replica holds, unacknowledged, until their deliveries are final",
            registry=r,
        )
        self.consumer_pending = Gauge(
            "nimbus_notifier_consumer_pending",
            "Events in the stream the notifiers' consumer has not handed out yet (the backlog)",
            registry=r,
        )
        self.consumer_ack_pending = Gauge(
            "nimbus_notifier_consumer_ack_pending",
            "Events handed out to notifier replicas and not yet acknowledged",
            registry=r,
        )
        self._labelled: dict[tuple[int, str, str], Counter] = {}

    def _counter(self, family: Counter, webhook: str, outcome: str) -> Counter:
        key = (id(family), webhook, outcome)
        child = self._labelled.get(key)
        if child is None:
            child = self._labelled[key] = family.labels(webhook, outcome)
        return child

    def attempted(self, webhook: str, outcome: str, seconds: float) -> None:
        self._counter(self.attempts, webhook, outcome).inc()
        self.attempt_duration.observe(seconds)

    def delivered(self, webhook: str, event_time: float) -> None:
        """A 2xx; `event_time` (epoch seconds) is when the event happened, 0 when unknown."""
        self._counter(self.deliveries, webhook, DELIVERED).inc()
        if event_time:
            self.delivery_latency.observe(max(0.0, time.time() - event_time))

    def dead(self, webhook: str) -> None:
        self._counter(self.deliveries, webhook, DEAD).inc()
        self.dead_letters.labels(webhook).inc()

    @contextmanager
    def sending(self) -> Iterator[None]:
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()

    def watch_breakers(self, states: Callable[[], Iterable[str]]) -> None:
        """Export `nimbus_notifier_circuit_breakers{state}`: receivers in each state."""
        self.registry.register(
            StateGauge(
                "nimbus_notifier_circuit_breakers",
                "Receivers (scheme://host:port) by circuit breaker state",
                "state",
                BREAKER_STATES,
                states,
            )
        )

    def render(self) -> bytes:
        return render(self.registry)
