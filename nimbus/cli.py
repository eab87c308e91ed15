"""The `nimbus` command: one entry point, a subcommand per service."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from nimbus.config import ConfigError

Main = Callable[[argparse.Namespace], int]


# name, help, module holding add_arguments and main; a module is imported only for its own
# command (a registry process need not load the replicator's OCI client or the console).
COMMANDS = [
    ("registry", "run the OCI registry", "registry.cli"),
    ("ctl", "control the services over gRPC", "nimbus.ctl"),
    ("notifier", "run the webhook notifier", "notifier.cli"),
    ("replicator", "run replication", "replicator.cli"),
    ("up", "run the whole system on this machine", "nimbus.up.cli"),
    ("tls", "certificates for HTTPS: a local CA", "nimbus.tls.cli"),
    ("ui", "run the web console", "console.cli"),
]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv`` naming a command, only that command's module is imported."""
    chosen = argv[0] if argv and argv[0] in {c[0] for c in COMMANDS} else None
    parser = argparse.ArgumentParser(prog="nimbus", description="Nimbus container registry")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, module_name in COMMANDS:
        p = sub.add_parser(name, help=help_text)
        if chosen is not None and name != chosen:
            continue
        module = importlib.import_module(module_name)
        add_arguments: Callable[[argparse.ArgumentParser], None] = module.add_arguments
        main: Main = module.main
        add_arguments(p)
        p.set_defaults(main=main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
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
