"""`nimbus registry`: flags of the registry service."""

from __future__ import annotations

import argparse
from typing import Any

from nimbus.config import load
from registry.config import RegistryConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument("--listen", help="HOST:PORT to serve the OCI API on (127.0.0.1:5000)")
    parser.add_argument("--data-dir", help="where blobs, manifests and uploads live (./data)")
    parser.add_argument("--workers", type=int, help="processes sharing the port (1)")
    parser.add_argument("--log-level", help="debug, info, warning or error")
    parser.add_argument("--nats", action="append", help="NATS URL; repeat for a cluster")
    parser.add_argument("--site", help="this site's name in events")


def flags(args: argparse.Namespace) -> dict[str, Any]:
    events: dict[str, Any] = {"nats": args.nats, "site": args.site}
    return {
        "listen": args.listen,
        "data_dir": args.data_dir,
        "workers": args.workers,
        "log_level": args.log_level,
        "events": {k: v for k, v in events.items() if v is not None},
    }


def main(args: argparse.Namespace) -> int:
    from registry.server import run

    config = load(RegistryConfig, args.config, flags=flags(args))
    run(config)
    return 0
