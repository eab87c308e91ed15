"""`nimbus notifier`: flags of the webhook notifier service."""

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
from notifier.config import NotifierConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file")
    add_nats_arguments(parser)
    parser.add_argument(
        "--kv-replicas", type=int, help="copies a NATS cluster keeps of the KV buckets (1)"
    )
    add_grpc_arguments(parser, "Webhooks", "127.0.0.1:50052")
    add_metrics_argument(parser, "none; e.g. 127.0.0.1:9102")
    parser.add_argument("--instance", help="this replica's name in delivery records")
    parser.add_argument("--log-level", help="debug, info, warning or error")


def flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        **nats_flags(args),
        **grpc_flags(args),
        **metrics_flags(args),
        "kv_replicas": args.kv_replicas,
        "instance": args.instance,
        "log_level": args.log_level,
    }


def main(args: argparse.Namespace) -> int:
    from notifier.service import run

    config = load(NotifierConfig, args.config, flags=flags(args))
    run(config)
    return 0
