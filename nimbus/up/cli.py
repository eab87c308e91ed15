"""`nimbus up`: flags of the one-machine launcher."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from nimbus.config import load
from nimbus.up.config import UpConfig

# (flag, setting, help); every port has one so several stacks (and tests) can run side by side.
PORT_FLAGS = [
    ("--nats-port", "nats_port", "NATS client port, on loopback (4222)"),
    ("--registry-a-port", "registry_a_port", "OCI API of site a (5000)"),
    ("--registry-a-grpc-port", "registry_a_grpc_port", "admin API of site a (50051)"),
    ("--notifier-grpc-port", "notifier_grpc_port", "Webhooks API (50052)"),
    ("--replicator-a-grpc-port", "replicator_a_grpc_port", "Replication API of site a (50053)"),
    ("--registry-b-port", "registry_b_port", "OCI API of site b (5001)"),
    ("--registry-b-grpc-port", "registry_b_grpc_port", "admin API of site b (50054)"),
    ("--replicator-b-grpc-port", "replicator_b_grpc_port", "Replication API of site b (50055)"),
    ("--console-port", "console_port", "the web console (5080)"),
    ("--notifier-metrics-port", "notifier_metrics_port", "notifier's /metrics (9102)"),
    ("--replicator-a-metrics-port", "replicator_a_metrics_port", "/metrics of replicator a (9103)"),
    ("--replicator-b-metrics-port", "replicator_b_metrics_port", "/metrics of replicator b (9104)"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run NATS, the registry of site a, the notifier and the replicator (and site b with "
        "--sites 2) as child processes; Ctrl-C stops them all. Data stays under --data-dir."
    )
    parser.add_argument("--config", help="YAML file of these settings")
    parser.add_argument("--sites", type=int, choices=(1, 2), help="1: site a; 2: a and b (1)")
    parser.add_argument(
        "--active-active",
        action="store_true",
        default=None,
        help="with --sites 2, b replicates back to a too",
    )
    parser.add_argument(
        "--listen-host", help="address the services listen on (127.0.0.1; 0.0.0.0 for others)"
    )
    parser.add_argument("--data-dir", help="NATS data, site storage and logs (./data)")
    parser.add_argument(
        "--tls",
        action="store_true",
        default=None,
        help="HTTPS on the registries, with a local CA in <data-dir>/tls",
    )
    parser.add_argument("--admin-token", help="token every gRPC call must carry (none)")
    parser.add_argument("--log-level", help="of the services: debug, info, warning or error")
    parser.add_argument("--nats-server", metavar="PATH", help="nats-server binary (installed one)")
    ports = parser.add_argument_group("ports")
    for flag, dest, help_text in PORT_FLAGS:
        ports.add_argument(flag, dest=dest, type=int, metavar="PORT", help=help_text)
    parser.add_argument("--start-timeout", type=float, help="seconds per service to start (60)")
    parser.add_argument(
        "--stop-timeout", type=float, help="seconds per service to stop before SIGKILL (10)"
    )


def flags(args: argparse.Namespace) -> dict[str, Any]:
    names = [
        "sites",
        "active_active",
        "listen_host",
        "data_dir",
        "tls",
        "admin_token",
        "log_level",
        "nats_server",
        "start_timeout",
        "stop_timeout",
        *(dest for _, dest, _ in PORT_FLAGS),
    ]
    return {name: getattr(args, name) for name in names}


def main(args: argparse.Namespace) -> int:
    from nimbus.up.launcher import launch

    config = load(UpConfig, args.config, flags=flags(args))
    return asyncio.run(launch(config))
