"""Settings of `nimbus up` (YAML < NIMBUS_* environment < flags), defaults as in the README."""

from __future__ import annotations

from dataclasses import dataclass, fields

from nimbus.config import ConfigError

# The two sites `nimbus up` knows: the first one always, the second with --sites 2.
SITE_NAMES = ("a", "b")


@dataclass
class UpConfig:
    # 1: site a alone; 2: site a replicating to site b.
    sites: int = 1
    # Site b replicates back to site a too.
    active_active: bool = False
    # Address every service listens on; 0.0.0.0 lets other hosts push, pull and call the APIs.
    listen_host: str = "127.0.0.1"
    # NATS, the registries' storage and the logs live under here; kept across runs.
    data_dir: str = "./data"
    # Bearer token every gRPC call must carry (passed to every service); none by default.
    admin_token: str = ""
    log_level: str = "info"
    # HTTPS on every registry, with a local CA under <data_dir>/tls (made once, then reused).
    tls: bool = False
    # The nats-server binary; found beside this Python or on PATH when empty.
    nats_server: str = ""
    # Ports. NATS stays on loopback: it has no authentication here.
    nats_port: int = 4222
    registry_a_port: int = 5000
    registry_a_grpc_port: int = 50051
    notifier_grpc_port: int = 50052
    replicator_a_grpc_port: int = 50053
    registry_b_port: int = 5001
    registry_b_grpc_port: int = 50054
    replicator_b_grpc_port: int = 50055
    # Prometheus /metrics of the notifier and the replicators (the registries serve theirs on
    # their OCI API port).
    notifier_metrics_port: int = 9102
    replicator_a_metrics_port: int = 9103
    replicator_b_metrics_port: int = 9104
    # The web console (`nimbus ui`).
    console_port: int = 5080
    # Seconds a service may take to become ready, and to stop before it is killed.
    start_timeout: float = 60.0
    stop_timeout: float = 10.0

    def validate(self) -> None:
        if self.sites not in (1, 2):
            raise ConfigError(f"sites: 1 or 2, got {self.sites}")
        if self.active_active and self.sites != 2:
            raise ConfigError("active_active: needs sites 2")
        if not self.listen_host:
            raise ConfigError("listen_host: give an address such as 127.0.0.1 or 0.0.0.0")
        if not self.data_dir:
            raise ConfigError("data_dir: give a directory")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level: one of debug, info, warning, error")
        if self.start_timeout <= 0 or self.stop_timeout <= 0:
            raise ConfigError("start_timeout and stop_timeout: seconds, above 0")
        ports = self.ports_in_use()
        for key, port in ports.items():
            if not 1 <= port <= 65535:
                raise ConfigError(f"{key}: a port between 1 and 65535, got {port}")
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port in seen:
                raise ConfigError(f"{key} and {seen[port]}: both are port {port}")
            seen[port] = key

    def ports_in_use(self) -> dict[str, int]:
        """The port settings this run needs (site b's only with two sites)."""
        found = {}
        for f in fields(self):
            if not f.name.endswith("_port"):
                continue
            if "_b_" in f.name and self.sites < 2:
                continue
            if f.name.startswith("replicator_b_") and not self.active_active:
                continue
            found[f.name] = int(getattr(self, f.name))
        return found
