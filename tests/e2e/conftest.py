"""`nimbus up` as a real child process on ephemeral ports, and the tools a user drives it with."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nimbus.up.cli import PORT_FLAGS
from nimbus.up.launcher import READY_LINE
from tests.fixtures.process import ChildProcess
from tests.fixtures.registry import free_ports

NIMBUS = [sys.executable, "-m", "nimbus.cli"]


@dataclass
class Ports:
    """One free port per `nimbus up` port flag; kept across restarts of a stack."""

    by_dest: dict[str, int] = field(
        default_factory=lambda: dict(
            zip((dest for _, dest, _ in PORT_FLAGS), free_ports(len(PORT_FLAGS)), strict=True)
        )
    )

    def flags(self) -> list[str]:
        found = []
        for flag, dest, _ in PORT_FLAGS:
            found += [flag, str(self.by_dest[dest])]
        return found

    def address(self, dest: str) -> str:
        return f"127.0.0.1:{self.by_dest[dest]}"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def run(*argv: str, env: dict[str, str] | None = None, within: float = 120) -> Result:
    """A command in a thread (the test's event loop keeps serving webhook receivers)."""
    done = await asyncio.to_thread(
        subprocess.run,
        list(argv),
        capture_output=True,
        text=True,
        timeout=within,
        check=False,
        env={**os.environ, **(env or {})},
    )
    return Result(done.returncode, done.stdout, done.stderr)


def _children_of() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name (in parentheses) may hold spaces: the parent pid follows its end.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    tree, found, todo = _children_of(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class UpProcess(ChildProcess):
    """`nimbus up` with every port its own and its data under `data_dir`."""

    # A stack stops each of its services before it exits.
    stop_timeout = 60.0

    def __init__(
        self, data_dir: Path, ports: Ports, args: list[str], env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.args = args
        self.env = {**os.environ, **(env or {})}
        # What `nimbus ctl` must present when the stack runs with an admin token.
        self.token = args[args.index("--admin-token") + 1] if "--admin-token" in args else ""
        super().__init__(data_dir.parent / f"up-{time.monotonic_ns()}.out")
        self.pids: list[int] = []

    def start(self) -> UpProcess:
        self.spawn(
            [*NIMBUS, "up", "--data-dir", str(self.data_dir), *self.ports.flags(), *self.args],
            self.env,
        )
        return self

    def output(self) -> str:
        return self.log_text()

    async def wait_ready(self, within: float = 90) -> str:
        assert self.proc is not None
        deadline = time.monotonic() + within
        while READY_LINE not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"nimbus up exited with {self.proc.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"nimbus up not ready within {within}s:\n{self.output()}")
            await asyncio.sleep(0.1)
        # Every process it runs, to check later that none is left behind.
        self.pids = descendants(self.proc.pid)
        return self.output()

    async def wait_exit(self, within: float = 60) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, within)

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit()

    def registry(self, site: str) -> str:
        return self.ports.address(f"registry_{site}_port")

    async def ctl(self, *args: str, token: bool = True) -> Result:
        """`nimbus ctl` against this stack (with its admin token unless `token` is False)."""
        return await run(
            *NIMBUS,
            "ctl",
            "--registry",
            self.ports.address("registry_a_grpc_port"),
            "--notifier",
            self.ports.address("notifier_grpc_port"),
            "--replicator",
            self.ports.address("replicator_a_grpc_port"),
            *args,
            env={"NIMBUS_ADMIN_TOKEN": self.token if token else ""},
        )

    def cleanup(self) -> None:
        """After a failed test: nothing may outlive it."""
        self.stop()
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


UpFactory = Callable[..., UpProcess]


@pytest.fixture
async def up_factory(tmp_path: Path) -> AsyncIterator[UpFactory]:
    """`up_factory(*args, ports=None, env=None)` starts `nimbus up` (not waiting); the data
    directory is the test's own, so a second stack of the test finds the data of the first."""
    started: list[UpProcess] = []

    def make(
        *args: str, ports: Ports | None = None, env: dict[str, str] | None = None
    ) -> UpProcess:
        up = UpProcess(tmp_path / "data", ports or Ports(), list(args), env)
        started.append(up)
        return up.start()

    yield make
    for up in started:
        await asyncio.to_thread(up.cleanup)
