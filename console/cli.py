"""`nimbus ui`: flags of the web console."""

from __future__ import annotations

import argparse
from typing import Any

from nimbus.config import load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument("--listen", help="HOST:PORT to serve the console on (127.0.0.1:5080)")
    parser.add_argument("--registry-url", help="the registry's OCI API (http://127.0.0.1:5000)")
    parser.add_argument("--registry-host", help="HOST[:PORT] shown in pull commands")
    parser.add_argument("--registry-grpc", help="registry admin API HOST:PORT (127.0.0.1:50051)")
    parser.add_argument("--notifier-grpc", help="notifier Webhooks API HOST:PORT (127.0.0.1:50052)")
    parser.add_argument(
        "--replicator-grpc", help="replicator Replication API HOST:PORT (127.0.0.1:50053); '' off"
    )
    parser.add_argument("--admin-token", help="the gRPC APIs' admin token; signs operators in")
    parser.add_argument("--registry-username", help="registry user for the operator's reads")
    parser.add_argument("--registry-password", help="its password (or NIMBUS_REGISTRY_PASSWORD)")
    parser.add_argument("--tls-ca", help="PEM CA of the registry's HTTPS and the gRPC TLS")
    parser.add_argument("--grpc-tls", action="store_true", default=None, help="gRPC over TLS")
    parser.add_argument("--secret", help="session cookie key (better: NIMBUS_SECRET)")
    parser.add_argument("--session-ttl", type=int, help="seconds a sign-in lasts (28800)")
    parser.add_argument("--log-level", help="debug, info, warning or error")


FIELDS = (
    "listen",
    "registry_url",
    "registry_host",
    "registry_grpc",
    "notifier_grpc",
    "replicator_grpc",
    "admin_token",
    "registry_username",
    "registry_password",
    "tls_ca",
    "grpc_tls",
    "secret",
    "session_ttl",
    "log_level",
)


def flags(args: argparse.Namespace) -> dict[str, Any]:
    return {f: getattr(args, f) for f in FIELDS}


def main(args: argparse.Namespace) -> int:
    from console.config import ConsoleConfig
    from console.server import run

    run(load(ConsoleConfig, args.config, flags=flags(args)))
    return 0
