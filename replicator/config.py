"""The replicator's configuration model (YAML < NIMBUS_* environment < flags)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from nimbus.config import ConfigError, split_hostport
from nimbus.grpcserver import GrpcServerConfig
from nimbus.kvbucket import MAX_REPLICAS
from nimbus.natsconn import NatsClientConfig
from replicator.worker import WorkerSettings


@dataclass
class SourceConfig:
    """This site's registry: where copies are read from."""

    url: str = "http://127.0.0.1:5000"
    username: str = ""
    password: str = ""
    token: str = ""
    tls_verify: bool = True
    tls_ca: str = ""


@dataclass
class WorkerConfig:
    # Seconds before JetStream hands an unacknowledged event to another replica; events being
    # copied are kept alive with progress acks.
    ack_wait: float = 30.0
    # Events held at once per peer.
    max_in_flight: int = 32
    # Blobs above this go up in chunks of this size (MiB).
    chunk_size_mib: int = 16
    # Blobs copied at once per image.
    blob_concurrency: int = 4
    # Backoff of transient errors: exponential with jitter from `retry_initial` up to `retry_max`.
    retry_initial: float = 0.5
    retry_max: float = 30.0
    # Tags copied at once by Sync.
    sync_concurrency: int = 4
    # Tries of an event whose change fails inside the replicator (not at a registry) before
    # it becomes an `internal` failure record and its repository's next event goes.
    job_attempts: int = 3
    # Tries of an event whose peer (or source) answers a server error (500, 501, 505 and up;
    # not 502-504, which say it is away) before it becomes a `peer-unreachable` failure record
    # and its repository's next event goes. An unreachable peer is waited for without end.
    error_attempts: int = 8
    # Seconds between tries, by one replica, of a peer's failure records that are not refusals
    # (`peer-unreachable`, `internal`); 0: only when asked (RetryFailure).
    failure_retry_interval: float = 60.0


@dataclass
class ReplicatorConfig(NatsClientConfig):
    nats: list[str] = field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    # Copies a NATS cluster keeps of the peers, failures and status buckets (1 to 5).
    kv_replicas: int = 1
    # This site: whose events are replicated (nimbus.events.<site>.>).
    site: str = "local"
    grpc_listen: str = "127.0.0.1:50053"
    admin_token: str = ""
    grpc_tls_cert: str = ""
    grpc_tls_key: str = ""
    # HOST:PORT of the Prometheus /metrics endpoint (e.g. 127.0.0.1:9103); "" serves none.
    metrics_listen: str = ""
    log_level: str = "info"
    # Names this replica in the status bucket; host and pid by default.
    instance: str = ""
    source: SourceConfig = field(default_factory=SourceConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)

    def validate(self) -> None:
        if not self.nats:
            raise ConfigError("nats: at least one NATS URL is needed")
        self.validate_nats()
        if not 1 <= self.kv_replicas <= MAX_REPLICAS:
            raise ConfigError(f"kv_replicas: between 1 and {MAX_REPLICAS}")
        if not self.site or not self.site.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("site: letters, digits, '-' and '_' only")
        self.grpc.validate("grpc")
        split_hostport(self.grpc_listen, "grpc_listen")
        if self.metrics_listen:
            split_hostport(self.metrics_listen, "metrics_listen")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level: one of debug, info, warning, error")
        if not self.source.url.startswith(("http://", "https://")):
            raise ConfigError(f"source.url: {self.source.url!r} is not an http(s) URL")
        w = self.worker
        if w.ack_wait < 1:
            raise ConfigError("worker.ack_wait: at least 1 second")
        for key, count in {
            "worker.max_in_flight": w.max_in_flight,
            "worker.chunk_size_mib": w.chunk_size_mib,
            "worker.blob_concurrency": w.blob_concurrency,
            "worker.sync_concurrency": w.sync_concurrency,
            "worker.job_attempts": w.job_attempts,
            "worker.error_attempts": w.error_attempts,
        }.items():
            if count < 1:
                raise ConfigError(f"{key}: must be at least 1, got {count}")
        if w.failure_retry_interval < 0:
            raise ConfigError("worker.failure_retry_interval: 0 (off) or a number of seconds")
        if not 0 < w.retry_initial <= w.retry_max:
            raise ConfigError("worker.retry_initial: above 0 and at most worker.retry_max")
        if not self.instance:
            self.instance = f"{socket.gethostname()}-{os.getpid()}"
        # The instance names a KV key token.
        self.instance = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.instance)

    @property
    def grpc(self) -> GrpcServerConfig:
        return GrpcServerConfig(
            listen=self.grpc_listen,
            admin_token=self.admin_token,
            tls_cert=self.grpc_tls_cert,
            tls_key=self.grpc_tls_key,
        )

    @property
    def worker_settings(self) -> WorkerSettings:
        w = self.worker
        return WorkerSettings(
            ack_wait=w.ack_wait,
            max_in_flight=w.max_in_flight,
            chunk_size=w.chunk_size_mib * 1024 * 1024,
            blob_concurrency=w.blob_concurrency,
            retry_initial=w.retry_initial,
            retry_max=w.retry_max,
            job_attempts=w.job_attempts,
            error_attempts=w.error_attempts,
            failure_retry_interval=w.failure_retry_interval,
        )
