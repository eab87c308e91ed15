"""`nimbus ctl`: the command line over the gRPC control API.

Each area (registry, webhooks, events, peers, ...) is a module in this package with a
`register(commands: nimbus.ctl.command.Commands) -> None` function that adds its commands using
`add_noun` / `add_command` from `nimbus.ctl.command`. A handler is `async def f(ctl: Ctl)`: it
opens channels with `ctl.channel("registry")` (or "notifier", "replicator"), prints through
`ctl.out` (tables by default, JSON with --json) and raises `CtlError` for user mistakes; gRPC
errors are turned into clear messages here. Registering an area is one line in `AREAS`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
from pathlib import Path
from typing import Any

import grpc

from nimbus.config import load
from nimbus.ctl.command import DEFAULT_ADDRESSES, Ctl, CtlError
from nimbus.ctl.config import CtlConfig
from nimbus.ctl.output import Output, describe_rpc_error

# One line per area: the module under nimbus.ctl that adds its commands.
AREAS: list[str] = [
    "registry",
    "webhooks",
    "events",
    "peers",
    "lifecycle",
    "cache",
]

DEFAULT_CONFIG = Path("~/.config/nimbus/ctl.yaml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", dest="ctl_config", help=f"YAML file ({DEFAULT_CONFIG})")
    for service, address in DEFAULT_ADDRESSES.items():
        parser.add_argument(f"--{service}", metavar="ADDR", help=f"{service} gRPC ({address})")
    parser.add_argument("--token", help="admin token (or NIMBUS_ADMIN_TOKEN)")
    parser.add_argument("--tls", action="store_true", default=None, help="use TLS (system CAs)")
    parser.add_argument("--tls-ca", help="CA certificate (PEM) to verify the services; implies TLS")
    parser.add_argument("--timeout", type=float, help="seconds per call (30)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    commands = parser.add_subparsers(dest="ctl_command", metavar="COMMAND")
    commands.required = True
    for area in AREAS:
        importlib.import_module(f"nimbus.ctl.{area}").register(commands)


def _config(args: argparse.Namespace) -> CtlConfig:
    file = args.ctl_config or os.environ.get("NIMBUS_CTL_CONFIG")
    if not file and DEFAULT_CONFIG.expanduser().is_file():
        file = str(DEFAULT_CONFIG.expanduser())
    flags: dict[str, Any] = {
        "registry": args.registry,
        "notifier": args.notifier,
        "replicator": args.replicator,
        "admin_token": args.token,
        "tls": args.tls,
        "tls_ca": args.tls_ca,
        "timeout": args.timeout,
    }
    return load(CtlConfig, file, flags=flags)


async def _run(args: argparse.Namespace, config: CtlConfig, out: Output) -> int:
    ctl = Ctl(
        args=args,
        out=out,
        addresses=config.addresses(),
        token=config.admin_token,
        tls_ca=config.tls_ca,
        tls=config.tls,
        timeout=config.timeout,
    )
    service: str = args.ctl_service
    try:
        result = await args.ctl_handler(ctl)
        return int(result or 0)
    except grpc.aio.AioRpcError as error:
        out.error(describe_rpc_error(error, service, ctl.addresses[service]))
        return 1
    except CtlError as error:
        out.error(str(error))
        return 1
    finally:
        await ctl.close()


def main(args: argparse.Namespace) -> int:
    config = _config(args)
    out = Output(json_mode=bool(args.json))
    try:
        return asyncio.run(_run(args, config, out))
    except OSError as error:  # e.g. an unreadable --tls-ca file
        out.error(str(error))
        return 1
