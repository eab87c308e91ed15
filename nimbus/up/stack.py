"""What `nimbus up` runs: the processes in dependency order and the replication peers."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from nimbus import natsserver
from nimbus.up.config import SITE_NAMES, UpConfig
from nimbus.up.readiness import GrpcHealthProbe, HttpProbe, Probe, TcpProbe

# Listening on every interface: local clients (probes, the replicators) still use loopback.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
LOOPBACK = "127.0.0.1"


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Port:
    number: int
    # What it is for, as the error names it: "registry a", "registry a (gRPC admin API)".
    owner: str


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # "registry a"
    slug: str  # "registry-a": its log file
    argv: tuple[str, ...]
    host: str  # the address its ports are bound on
    ports: tuple[Port, ...]
    probe: Probe
    endpoint: str  # where clients reach it: an OCI API URL, a NATS URL, or ""
    grpc: str = ""  # its gRPC API (HOST:PORT), or ""
    metrics: str = ""  # its Prometheus scrape URL, or ""


@dataclass(frozen=True)
class PeerSpec:
    """A peer to create at a replicator: `from_site` replicates to `site` at `url`."""

    replicator: str  # gRPC address of the replicator of `from_site`
    from_site: str
    name: str
    url: str
    site: str
    # The CA the replicator verifies the peer with ("" for plain HTTP).
    ca_file: str = ""


@dataclass(frozen=True)
class TlsFiles:
    """The local CA and the registries' certificate of `nimbus up --tls`."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def trust_dir(self) -> Path:
        """The CA alone, as skopeo's and podman's --cert-dir want it (a key there would be
        taken for a client certificate's)."""
        return self.directory / "trust"

    @property
    def key(self) -> Path:
        return self.directory / "server.key"


@dataclass(frozen=True)
class Stack:
    services: tuple[ServiceSpec, ...]
    peers: tuple[PeerSpec, ...]
    data_dir: Path
    log_dir: Path
    listen_host: str
    connect_host: str  # the host local clients use to reach the services
    tls: TlsFiles | None = None


def _nimbus(*args: str) -> tuple[str, ...]:
    # This interpreter, so the services run the same installed code as `nimbus up`.
    return (sys.executable, "-m", "nimbus.cli", *args)


def plan(config: UpConfig) -> Stack:
    """The stack `config` describes. Raises NatsServerMissingError without nats-server."""
    data = Path(config.data_dir)
    host = config.listen_host
    local = LOOPBACK if host in WILDCARD_HOSTS else host
    nats_url = f"nats://{LOOPBACK}:{config.nats_port}"
    level = ("--log-level", config.log_level.lower())
    sites = SITE_NAMES[: config.sites]
    tls = TlsFiles(data / "tls") if config.tls else None
    scheme = "https" if tls else "http"
    ca_file = str(tls.ca) if tls else ""
    serve_tls = ("--tls-cert", str(tls.cert), "--tls-key", str(tls.key)) if tls else ()
    registry_ports = {
        "a": (config.registry_a_port, config.registry_a_grpc_port),
        "b": (config.registry_b_port, config.registry_b_grpc_port),
    }
    replicator_ports = {"a": config.replicator_a_grpc_port, "b": config.replicator_b_grpc_port}
    replicator_metrics = {
        "a": config.replicator_a_metrics_port,
        "b": config.replicator_b_metrics_port,
    }

    services = [
        ServiceSpec(
            name="nats-server",
            slug="nats",
            argv=(
                config.nats_server or natsserver.binary(),
                "--jetstream",
                "--addr",
                LOOPBACK,
                "--port",
                str(config.nats_port),
                "--store_dir",
                str(data / "nats"),
                "--server_name",
                "nimbus-up",
            ),
            host=LOOPBACK,
            ports=(Port(config.nats_port, "nats-server"),),
            probe=TcpProbe(LOOPBACK, config.nats_port),
            endpoint=nats_url,
        )
    ]
    for site in sites:
        http_port, grpc_port = registry_ports[site]
        name = f"registry {site}"
        services.append(
            ServiceSpec(
                name=name,
                slug=f"registry-{site}",
                argv=_nimbus(
                    "registry",
                    "--listen",
                    hostport(host, http_port),
                    "--data-dir",
                    str(data / site),
                    "--nats",
                    nats_url,
                    "--site",
                    site,
                    "--grpc-listen",
                    hostport(host, grpc_port),
                    *serve_tls,
                    *level,
                ),
                host=host,
                ports=(Port(http_port, name), Port(grpc_port, f"{name} (gRPC admin API)")),
                probe=HttpProbe(f"{scheme}://{hostport(local, http_port)}/v2/", ca_file),
                endpoint=f"{scheme}://{hostport(local, http_port)}",
                grpc=hostport(local, grpc_port),
                metrics=f"{scheme}://{hostport(local, http_port)}/metrics",
            )
        )
    notifier = hostport(local, config.notifier_grpc_port)
    services.append(
        ServiceSpec(
            name="notifier",
            slug="notifier",
            argv=_nimbus(
                "notifier",
                "--nats",
                nats_url,
                "--grpc-listen",
                hostport(host, config.notifier_grpc_port),
                "--metrics-listen",
                hostport(host, config.notifier_metrics_port),
                *level,
            ),
            host=host,
            ports=(
                Port(config.notifier_grpc_port, "notifier (gRPC Webhooks API)"),
                Port(config.notifier_metrics_port, "notifier (metrics)"),
            ),
            probe=GrpcHealthProbe(notifier),
            endpoint="",
            grpc=notifier,
            metrics=f"http://{hostport(local, config.notifier_metrics_port)}/metrics",
        )
    )
    # Site a replicates to b; with active-active, b replicates to a as well.
    senders = ("a", "b") if config.active_active else ("a",)
    peers = []
    for site in senders:
        port = replicator_ports[site]
        address = hostport(local, port)
        name = f"replicator {site}"
        services.append(
            ServiceSpec(
                name=name,
                slug=f"replicator-{site}",
                argv=_nimbus(
                    "replicator",
                    "--nats",
                    nats_url,
                    "--site",
                    site,
                    "--registry",
                    f"{scheme}://{hostport(local, registry_ports[site][0])}",
                    *(("--registry-tls-ca", ca_file) if tls else ()),
                    "--grpc-listen",
                    hostport(host, port),
                    "--metrics-listen",
                    hostport(host, replicator_metrics[site]),
                    *level,
                ),
                host=host,
                ports=(
                    Port(port, f"{name} (gRPC Replication API)"),
                    Port(replicator_metrics[site], f"{name} (metrics)"),
                ),
                probe=GrpcHealthProbe(address),
                endpoint="",
                grpc=address,
                metrics=f"http://{hostport(local, replicator_metrics[site])}/metrics",
            )
        )
        for target in sites:
            if target != site:
                peers.append(
                    PeerSpec(
                        replicator=address,
                        from_site=site,
                        name=target,
                        url=f"{scheme}://{hostport(local, registry_ports[target][0])}",
                        site=target,
                        ca_file=ca_file,
                    )
                )
    # The web console last: a client of everything above, on site a.
    console_port = config.console_port
    services.append(
        ServiceSpec(
            name="console",
            slug="console",
            argv=_nimbus(
                "ui",
                "--listen",
                hostport(host, console_port),
                "--registry-url",
                f"{scheme}://{hostport(local, registry_ports['a'][0])}",
                "--registry-grpc",
                hostport(local, registry_ports["a"][1]),
                "--notifier-grpc",
                notifier,
                "--replicator-grpc",
                hostport(local, replicator_ports["a"]),
                *(("--tls-ca", ca_file) if tls else ()),
                *level,
            ),
            host=host,
            ports=(Port(console_port, "console"),),
            probe=HttpProbe(f"http://{hostport(local, console_port)}/healthz"),
            endpoint=f"http://{hostport(local, console_port)}",
        )
    )
    return Stack(
        tls=tls,
        services=tuple(services),
        peers=tuple(peers),
        data_dir=data,
        log_dir=data / "logs",
        listen_host=host,
        connect_host=local,
    )
