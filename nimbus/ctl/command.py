"""What every `nimbus ctl` command gets: the parsed flags, channels to the services, output."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from nimbus.ctl.output import Output
from nimbus.grpcclient import open_channel

# The services `nimbus ctl` talks to, each with its address flag and default address.
DEFAULT_ADDRESSES = {
    "registry": "127.0.0.1:50051",
    "notifier": "127.0.0.1:50052",
    "replicator": "127.0.0.1:50053",
}

# The sub-commands of `nimbus ctl` (or of one noun); generic only for the type checker.
if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Commands = argparse._SubParsersAction


class CtlError(Exception):
    """A problem the user can fix (bad argument, nothing found); printed without a traceback."""


@dataclass
class Ctl:
    """One command run: flags, output and lazily opened channels (closed by the framework)."""

    args: argparse.Namespace
    out: Output
    addresses: dict[str, str]
    token: str = ""
    tls_ca: str = ""
    tls: bool = False
    timeout: float = 30.0
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            self._channels[service] = open_channel(
                self.addresses[service], self.token, tls_ca=self.tls_ca, tls=self.tls
            )
        return self._channels[service]

    async def pages(
        self,
        call: Callable[..., Awaitable[Any]],
        request: Any,
        items_field: str,
        limit: int = 0,
    ) -> list[Any]:
        """Every item of a paginated list call (page_size/page_token/next_page_token)."""
        items: list[Any] = []
        while True:
            response = await call(request, timeout=self.timeout)
            items.extend(getattr(response, items_field))
            if not response.next_page_token or (limit and len(items) >= limit):
                return items[:limit] if limit else items
            request.page_token = response.next_page_token

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


Handler = Callable[[Ctl], Awaitable[int | None]]


def add_command(
    commands: Commands, name: str, handler: Handler, service: str, help: str
) -> argparse.ArgumentParser:
    """Add a leaf command calling `handler`; errors name `service` and its address."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
    parser.set_defaults(ctl_handler=handler, ctl_service=service)
    # Accept --json after the command too (`nimbus ctl repos list --json`).
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")
    return parser


def add_noun(commands: Commands, name: str, help: str) -> Commands:
    """A group of commands (`nimbus ctl tags list|rm`); returns where to add them."""
    parser = commands.add_parser(name, help=help, description=help)
    verbs: Commands = parser.add_subparsers(dest=f"ctl_{name}_verb", metavar="COMMAND")
    verbs.required = True
    return verbs
