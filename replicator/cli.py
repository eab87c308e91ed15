"""`nimbus replicator`: flags of the replication service."""

from __future__ import annotations

import argparse
from typing import Any

from nimbus.config import load
from replicator.config import ReplicatorConfig


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
    parser.add_argument("--site", help="this site: whose events are replicated (local)")
    parser.add_argument(
        "--registry", help="this site's registry, where copies are read (http://127.0.0.1:5000)"
    )
    parser.add_argument("--grpc-listen", help="HOST:PORT of the Replication API (127.0.0.1:50053)")
    parser.add_argument("--admin-token", help="token every API call must carry")
    parser.add_argument("--grpc-tls-cert", help="certificate (PEM) to serve gRPC over TLS")
    parser.add_argument("--grpc-tls-key", help="key (PEM) to serve gRPC over TLS")
    parser.add_argument("--instance", help="this replica's name in the status bucket")
    parser.add_argument("--log-level", help="debug, info, warning or error")
    parser.add_argument("--ack-wait", type=float, help="seconds before an unacked event moves (30)")
    parser.add_argument("--retry-max", type=float, help="longest backoff between retries (30)")


def flags(args: argparse.Namespace) -> dict[str, Any]:
    worker = {"ack_wait": args.ack_wait, "retry_max": args.retry_max}
    return {
        "nats": args.nats,
        "nats_creds": args.nats_creds,
        "nats_token": args.nats_token,
        "nats_user": args.nats_user,
        "nats_password": args.nats_password,
        "nats_tls_ca": args.nats_tls_ca,
        "nats_tls_cert": args.nats_tls_cert,
        "nats_tls_key": args.nats_tls_key,
        "kv_replicas": args.kv_replicas,
        "site": args.site,
        "source": {"url": args.registry} if args.registry else None,
        "grpc_listen": args.grpc_listen,
        "admin_token": args.admin_token,
        "grpc_tls_cert": args.grpc_tls_cert,
        "grpc_tls_key": args.grpc_tls_key,
        "instance": args.instance,
        "log_level": args.log_level,
        "worker": {k: v for k, v in worker.items() if v is not None} or None,
    }


def main(args: argparse.Namespace) -> int:
    from replicator.server import run

    config = load(ReplicatorConfig, args.config, flags=flags(args))
    run(config)
    return 0
