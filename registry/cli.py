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
    events = parser.add_argument_group("events (off without --nats)")
    events.add_argument("--nats", action="append", help="NATS URL; repeat for a cluster")
    events.add_argument("--site", help="this site's name in events and subjects (local)")
    events.add_argument("--nats-creds", help="NATS credentials file (user JWT and NKey seed)")
    events.add_argument("--nats-token", help="NATS authentication token")
    events.add_argument("--nats-user", help="NATS user (with --nats-password)")
    events.add_argument("--nats-password", help="NATS password")
    events.add_argument("--nats-tls-ca", help="CA bundle to verify the NATS servers with")
    events.add_argument("--nats-tls-cert", help="client certificate for mutual TLS")
    events.add_argument("--nats-tls-key", help="key of the client certificate")
    events.add_argument(
        "--publish-timeout",
        type=float,
        help="seconds a request waits for the JetStream ack before using the outbox (0.5)",
    )
    events.add_argument("--outbox-dir", help="local directory of the event outbox")
    events.add_argument(
        "--blob-events",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="emit blob upload completions (on)",
    )
    events.add_argument(
        "--pull-events",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="emit manifest pulls (off)",
    )


def flags(args: argparse.Namespace) -> dict[str, Any]:
    events: dict[str, Any] = {
        "nats": args.nats,
        "site": args.site,
        "nats_creds": args.nats_creds,
        "nats_token": args.nats_token,
        "nats_user": args.nats_user,
        "nats_password": args.nats_password,
        "nats_tls_ca": args.nats_tls_ca,
        "nats_tls_cert": args.nats_tls_cert,
        "nats_tls_key": args.nats_tls_key,
        "publish_timeout": args.publish_timeout,
        "outbox_dir": args.outbox_dir,
        "blob_uploads": args.blob_events,
        "pulls": args.pull_events,
    }
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
