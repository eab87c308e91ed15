"""`nimbus replicator`: flags of the replication service."""

from __future__ import annotations

import argparse
from typing import Any

from nimbus.config import load
from nimbus.serviceflags import (
    add_grpc_arguments,
    add_metrics_argument,
    add_nats_arguments,
    grpc_flags,
    metrics_flags,
    nats_flags,
)
from replicator.config import ReplicatorConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file")
    add_nats_arguments(parser)
    parser.add_argument(
        "--kv-replicas", type=int, help="copies a NATS cluster keeps of the KV buckets (1)"
    )
    parser.add_argument("--site", help="this site: whose events are replicated (local)")
    parser.add_argument(
        "--registry", help="this site's registry, where copies are read (http://127.0.0.1:5000)"
    )
    parser.add_argument("--registry-tls-ca", help="CA bundle that verifies an https --registry")
    add_grpc_arguments(parser, "Replication", "127.0.0.1:50053")
    add_metrics_argument(parser, "none; e.g. 127.0.0.1:9103")
    parser.add_argument("--instance", help="this replica's name in the status bucket")
    parser.add_argument("--log-level", help="debug, info, warning or error")
    parser.add_argument("--ack-wait", type=float, help="seconds before an unacked event moves (30)")
    parser.add_argument("--retry-max", type=float, help="longest backoff between retries (30)")


def flags(args: argparse.Namespace) -> dict[str, Any]:
    worker = {"ack_wait": args.ack_wait, "retry_max": args.retry_max}
    return {
        **nats_flags(args),
        **grpc_flags(args),
        **metrics_flags(args),
        "kv_replicas": args.kv_replicas,
        "site": args.site,
        "source": {k: v for k, v in (("url", args.registry), ("tls_ca", args.registry_tls_ca)) if v}
        or None,
        "instance": args.instance,
        "log_level": args.log_level,
        "worker": {k: v for k, v in worker.items() if v is not None} or None,
    }


def main(args: argparse.Namespace) -> int:
    from replicator.server import run

    config = load(ReplicatorConfig, args.config, flags=flags(args))
    run(config)
    return 0
