"""`nimbus notifier`: flags of the webhook notifier service."""

from __future__ import annotations

import argparse
from typing import Any

from nimbus.config import load
from notifier.config import NotifierConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument("--nats", action="append", help="NATS URL; repeat for a cluster")
    parser.add_argument("--nats-creds", help="NATS credentials file")
    parser.add_argument("--nats-token", help="NATS authentication token")
    parser.add_argument("--nats-user", help="NATS user (with --nats-password)")
    parser.add_argument("--nats-password", help="NATS password")
    parser.add_argument("--nats-tls-ca", help="CA (PEM) to verify NATS servers")
    parser.add_argument("--nats-tls-cert", help="client certificate (PEM) for NATS")
    parser.add_argument("--nats-tls-key", help="client key (PEM) for NATS")
    parser.add_argument(
        "--kv-replicas", type=int, help="copies a NATS cluster keeps of the KV buckets (1)"
    )
    parser.add_argument("--grpc-listen", help="HOST:PORT of the Webhooks API (127.0.0.1:50052)")
    parser.add_argument("--admin-token", help="token every API call must carry")
    parser.add_argument("--grpc-tls-cert", help="certificate (PEM) to serve gRPC over TLS")
    parser.add_argument("--grpc-tls-key", help="key (PEM) to serve gRPC over TLS")
    parser.add_argument("--instance", help="this replica's name in delivery records")
    parser.add_argument("--log-level", help="debug, info, warning or error")


def flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "nats": args.nats,
        "nats_creds": args.nats_creds,
        "nats_token": args.nats_token,
        "nats_user": args.nats_user,
        "nats_password": args.nats_password,
        "kv_replicas": args.kv_replicas,
        "nats_tls_ca": args.nats_tls_ca,
        "nats_tls_cert": args.nats_tls_cert,
        "nats_tls_key": args.nats_tls_key,
        "grpc_listen": args.grpc_listen,
        "admin_token": args.admin_token,
        "grpc_tls_cert": args.grpc_tls_cert,
        "grpc_tls_key": args.grpc_tls_key,
        "instance": args.instance,
        "log_level": args.log_level,
    }


def main(args: argparse.Namespace) -> int:
    from notifier.service import run

    config = load(NotifierConfig, args.config, flags=flags(args))
    run(config)
    return 0
