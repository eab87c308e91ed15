"""Flags every service shares: its NATS connection and its gRPC server.

Each flag names a field of `nimbus.natsconn.NatsClientConfig` or of the services' gRPC settings
(`grpc_listen`, `admin_token`, `grpc_tls_cert`, `grpc_tls_key`), so `*_flags` map them 1:1.
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

NATS_FIELDS = (
    "nats",
    "nats_creds",
    "nats_token",
    "nats_user",
    "nats_password",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
)
GRPC_FIELDS = ("grpc_listen", "admin_token", "grpc_tls_cert", "grpc_tls_key")


class _Group(Protocol):
    def add_argument(self, *names: str, **kwargs: Any) -> Any: ...


def add_nats_arguments(group: _Group) -> None:
    group.add_argument("--nats", action="append", help="NATS URL; repeat for a cluster")
    group.add_argument("--nats-creds", help="NATS credentials file (user JWT and NKey seed)")
    group.add_argument("--nats-token", help="NATS authentication token")
    group.add_argument("--nats-user", help="NATS user (with --nats-password)")
    group.add_argument("--nats-password", help="NATS password")
    group.add_argument("--nats-tls-ca", help="CA bundle to verify the NATS servers with")
    group.add_argument("--nats-tls-cert", help="client certificate for mutual TLS")
    group.add_argument("--nats-tls-key", help="key of the client certificate")


def add_grpc_arguments(group: _Group, api: str, default_listen: str) -> None:
    group.add_argument("--grpc-listen", help=f"HOST:PORT of the {api} API ({default_listen})")
    group.add_argument("--admin-token", help="bearer token every gRPC call must carry")
    group.add_argument("--grpc-tls-cert", help="PEM certificate: serve gRPC over TLS")
    group.add_argument("--grpc-tls-key", help="PEM key of --grpc-tls-cert")


def add_metrics_argument(group: _Group, default_listen: str) -> None:
    group.add_argument(
        "--metrics-listen",
        help=f"HOST:PORT of the Prometheus /metrics endpoint ({default_listen}; '' for none)",
    )


def metrics_flags(args: argparse.Namespace) -> dict[str, Any]:
    return _given(args, ("metrics_listen",))


def _given(args: argparse.Namespace, fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: getattr(args, f) for f in fields if getattr(args, f) is not None}


def nats_flags(args: argparse.Namespace) -> dict[str, Any]:
    return _given(args, NATS_FIELDS)


def grpc_flags(args: argparse.Namespace) -> dict[str, Any]:
    return _given(args, GRPC_FIELDS)
