"""One run of `nimbus up`: check, start in order, set up replication, report, watch, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TextIO

import grpc

from nimbus.natsserver import NatsServerMissingError
from nimbus.up import certificates, preflight
from nimbus.up.config import UpConfig
from nimbus.up.peers import describe_rules, ensure_peer
from nimbus.up.report import PeerRow, ServiceRow, next_steps, peers_table, services_table
from nimbus.up.stack import Stack, plan
from nimbus.up.supervisor import Child, StartError, Supervisor

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PREFIX = "nimbus up:"
# The line that says everything serves (scripts and tests wait for it).
READY_LINE = "Ready. Ctrl-C or SIGTERM stops everything."


def _say(text: str, stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


async def _explain_death(supervisor: Supervisor, child: Child, what: str) -> None:
    _say(f"{PREFIX} {what}", sys.stderr)
    tail = await supervisor.log_tail(child)
    if tail:
        _say(f"last lines of {child.log_path}:\n{_indent(tail)}", sys.stderr)


async def _start(
    stack: Stack, config: UpConfig, supervisor: Supervisor, interrupted: asyncio.Event
) -> int | None:
    """Start every service and set up replication; an exit code when that did not work out,
    None when all serves (or a signal came first: `interrupted` is set)."""
    _say(
        f"{PREFIX} starting {len(stack.services)} services "
        f"(data in {stack.data_dir}, logs in {stack.log_dir})"
    )
    rows = []
    for spec in stack.services:
        child = await supervisor.spawn(spec)
        if not await supervisor.wait_ready(child, config.start_timeout, interrupted):
            return None
        _say(f"  {spec.name} ready (pid {child.pid})")
        rows.append(ServiceRow(spec, child.pid, "ready"))
    peer_rows = []
    for peer in stack.peers:
        try:
            outcome, current = await ensure_peer(peer, config.admin_token)
        except grpc.aio.AioRpcError as error:
            _say(
                f"{PREFIX} cannot set up replication {peer.from_site} -> {peer.site} at "
                f"{peer.replicator}: {error.code().name}: {error.details()}",
                sys.stderr,
            )
            return 1
        peer_rows.append(PeerRow(peer, outcome, describe_rules(current)))
    _say("\n" + services_table(rows))
    if peer_rows:
        _say("\n" + peers_table(peer_rows))
    _say("\n" + next_steps(stack, bool(config.admin_token)))
    _say(READY_LINE)
    return None


async def _watch(supervisor: Supervisor, interrupted: asyncio.Event) -> int:
    """Until a signal (0) or a child's unexpected exit (1)."""
    exited = asyncio.create_task(supervisor.first_exit())
    signalled = asyncio.create_task(interrupted.wait())
    try:
        await asyncio.wait({exited, signalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
        exited.cancel()
    if interrupted.is_set() or not exited.done() or exited.cancelled():
        return 0
    child = exited.result()
    await _explain_death(
        supervisor, child, f"{child.spec.name} stopped unexpectedly: it {child.how_it_ended()}"
    )
    return 1


async def _stop_all(supervisor: Supervisor, hurry: asyncio.Event) -> None:
    running = [c for c in supervisor.children if c.running]
    if running:
        _say(f"{PREFIX} stopping {len(running)} services (again to kill them at once)")
    for child in reversed(supervisor.children):
        if child.running:
            outcome = await supervisor.stop(child, hurry)
            _say(f"  {child.spec.name} {outcome}")


async def launch(config: UpConfig) -> int:
    try:
        stack = plan(config)
    except NatsServerMissingError as error:
        _say(f"{PREFIX} {error}", sys.stderr)
        return 1
    problems = preflight.problems(stack.services)
    if problems:
        for problem in problems:
            _say(f"{PREFIX} {problem}", sys.stderr)
        _say(f"{PREFIX} nothing was started", sys.stderr)
        return 1

    if stack.tls is not None:
        _say(certificates.ensure(stack.tls, stack.listen_host))

    env = dict(os.environ)
    if config.admin_token:
        # The environment rather than a flag: a token on a command line shows in `ps`.
        env["NIMBUS_ADMIN_TOKEN"] = config.admin_token
    supervisor = Supervisor(stack.log_dir, env, config.stop_timeout)
    interrupted, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (hurry if interrupted.is_set() else interrupted).set()

    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal)
    try:
        failed = await _start(stack, config, supervisor, interrupted)
        if failed is not None:
            return failed
        return 0 if interrupted.is_set() else await _watch(supervisor, interrupted)
    except StartError as error:
        if error.child is None:
            _say(f"{PREFIX} {error}", sys.stderr)
        else:
            await _explain_death(supervisor, error.child, str(error))
        return 1
    finally:
        await _stop_all(supervisor, hurry)
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
