"""The notifier's configuration model (YAML < NIMBUS_* environment < flags)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from nimbus.config import ConfigError, split_hostport
from nimbus.grpcserver import GrpcServerConfig
from nimbus.kvbucket import MAX_REPLICAS
from nimbus.natsconn import NatsClientConfig


@dataclass
class DeliveryConfig:
    """How webhooks are sent, retried and given up on."""

    # Seconds for one HTTP request, connect to end of response.
    timeout: float = 10.0
    # A delivery is dead-lettered after this many attempts or this age (seconds), whichever first.
    max_attempts: int = 10
    max_age: float = 24 * 3600.0
    # Exponential backoff with full jitter between attempts: initial * 2^n, capped at max.
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    # A receiver's Retry-After is honoured up to this many seconds.
    retry_after_max: float = 3600.0
    # Requests in flight to one receiver (scheme, host and port) at once.
    concurrency: int = 16
    # After this many failures in a row the receiver's circuit opens for `breaker_cooldown`
    # seconds; then one probe decides whether it closes again.
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    # Bytes of the response body kept in a delivery record.
    excerpt_bytes: int = 1024


@dataclass
class ConsumerConfig:
    """The durable JetStream consumer that replicas share."""

    # Seconds before JetStream hands an unacknowledged event to another replica; events waiting
    # on a slow receiver are kept alive with progress acks.
    ack_wait: float = 30.0
    # Events held at once (waiting for their deliveries); the stream pauses beyond this.
    max_ack_pending: int = 10_000
    fetch_batch: int = 256
    # Tries of a delivery that fails inside the notifier (not at the receiver) before it is
    # recorded as dead and its lane moves on; NATS being away is waited out instead.
    job_attempts: int = 3


@dataclass
class NotifierConfig(NatsClientConfig):
    nats: list[str] = field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    # Copies a NATS cluster keeps of the webhooks and deliveries buckets (1 to 5).
    kv_replicas: int = 1
    grpc_listen: str = "127.0.0.1:50052"
    admin_token: str = ""
    grpc_tls_cert: str = ""
    grpc_tls_key: str = ""
    # HOST:PORT of the Prometheus /metrics endpoint (e.g. 127.0.0.1:9102); "" serves none.
    metrics_listen: str = ""
    log_level: str = "info"
    # Names this replica in delivery records; host and pid by default.
    instance: str = ""
    # Seconds delivery records are kept.
    deliveries_ttl: float = 7 * 24 * 3600.0
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)

    def validate(self) -> None:
        if not self.nats:
            raise ConfigError("nats: at least one NATS URL is needed")
        self.validate_nats()
        if not 1 <= self.kv_replicas <= MAX_REPLICAS:
            raise ConfigError(f"kv_replicas: between 1 and {MAX_REPLICAS}")
        self.grpc.validate("grpc")
        split_hostport(self.grpc_listen, "grpc_listen")
        if self.metrics_listen:
            split_hostport(self.metrics_listen, "metrics_listen")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level: one of debug, info, warning, error")
        d = self.delivery
        positive = {
            "delivery.timeout": d.timeout,
            "delivery.max_age": d.max_age,
            "delivery.backoff_initial": d.backoff_initial,
            "delivery.backoff_max": d.backoff_max,
            "delivery.breaker_cooldown": d.breaker_cooldown,
            "consumer.ack_wait": self.consumer.ack_wait,
            "deliveries_ttl": self.deliveries_ttl,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key}: must be greater than 0, got {value}")
        counts = {
            "delivery.max_attempts": d.max_attempts,
            "delivery.concurrency": d.concurrency,
            "delivery.breaker_failures": d.breaker_failures,
            "consumer.max_ack_pending": self.consumer.max_ack_pending,
            "consumer.fetch_batch": self.consumer.fetch_batch,
            "consumer.job_attempts": self.consumer.job_attempts,
        }
        for key, count in counts.items():
            if count < 1:
                raise ConfigError(f"{key}: must be at least 1, got {count}")
        if self.consumer.ack_wait < 1:
            raise ConfigError("consumer.ack_wait: at least 1 second")
        if not self.instance:
            self.instance = f"{socket.gethostname()}-{os.getpid()}"

    @property
    def grpc(self) -> GrpcServerConfig:
        return GrpcServerConfig(
            listen=self.grpc_listen,
            admin_token=self.admin_token,
            tls_cert=self.grpc_tls_cert,
            tls_key=self.grpc_tls_key,
        )
