"""The `nimbus` command: one entry point, a subcommand per service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from nimbus.config import ConfigError

Main = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from console import cli as console_cli
    from nimbus import ctl
    from nimbus.tls import cli as tls_cli
    from nimbus.up import cli as up_cli
    from notifier import cli as notifier_cli
    from registry import cli as registry_cli
    from replicator import cli as replicator_cli

    parser = argparse.ArgumentParser(prog="nimbus", description="Nimbus container registry")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Main]] = [
        ("registry", "run the OCI registry", registry_cli.add_arguments, registry_cli.main),
        ("ctl", "control the services over gRPC", ctl.add_arguments, ctl.main),
        ("notifier", "run the webhook notifier", notifier_cli.add_arguments, notifier_cli.main),
        ("replicator", "run replication", replicator_cli.add_arguments, replicator_cli.main),
        ("up", "run the whole system on this machine", up_cli.add_arguments, up_cli.main),
        ("tls", "certificates for HTTPS: a local CA", tls_cli.add_arguments, tls_cli.main),
        ("ui", "run the web console", console_cli.add_arguments, console_cli.main),
    ]
    for name, help_text, add_arguments, main in commands:
        p = sub.add_parser(name, help=help_text)
        add_arguments(p)
        p.set_defaults(main=main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.main(args)
        return result
    except ConfigError as error:
        print(f"nimbus {args.command}: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
