"""The console's configuration model (YAML < NIMBUS_* environment < flags)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from nimbus.config import ConfigError, split_hostport


@dataclass
class ConsoleConfig:
    listen: str = "127.0.0.1:5080"
    # The registry's OCI API, as the console reaches it.
    registry_url: str = "http://127.0.0.1:5000"
    # HOST[:PORT] users type in `docker pull`; empty: the host of registry_url.
    registry_host: str = ""
    # gRPC APIs (HOST:PORT); an empty replicator leaves the replication pages out.
    registry_grpc: str = "127.0.0.1:50051"
    notifier_grpc: str = "127.0.0.1:50052"
    replicator_grpc: str = "127.0.0.1:50053"
    # The admin bearer token of the gRPC APIs; also what signs an operator in to the admin
    # pages. Empty: the APIs are open, and so are the admin pages.
    admin_token: str = ""
    # Registry credentials for what the admin pages read over the OCI API (configs, manifests).
    registry_username: str = ""
    registry_password: str = ""
    # PEM CA of the registry's HTTPS and of the gRPC APIs' TLS (both off when empty).
    tls_ca: str = ""
    grpc_tls: bool = False
    # Key of the session cookies; empty: a random one per start (sessions end on restart,
    # and replicas need one shared secret).
    secret: str = ""
    # Seconds a sign-in lasts.
    session_ttl: int = 8 * 3600
    log_level: str = "info"

    @property
    def pull_host(self) -> str:
        return self.registry_host or (urlsplit(self.registry_url).netloc or self.registry_url)

    def validate(self) -> None:
        split_hostport(self.listen, "listen")
        if not self.registry_url.startswith(("http://", "https://")):
            raise ConfigError(f"registry_url: an http(s) URL, got {self.registry_url!r}")
        for key in ("registry_grpc", "notifier_grpc"):
            split_hostport(getattr(self, key), key)
        if self.replicator_grpc:
            split_hostport(self.replicator_grpc, "replicator_grpc")
        if self.session_ttl < 60:
            raise ConfigError("session_ttl: at least 60 seconds")
        if self.secret and len(self.secret) < 16:
            raise ConfigError("secret: at least 16 characters")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level: one of debug, info, warning, error")
