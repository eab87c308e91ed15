"""Children of `nimbus up`: started one by one, watched, and stopped in reverse order.

Each child runs in its own process group: the terminal's Ctrl-C reaches `nimbus up` alone,
which then stops the children in reverse dependency order (SIGTERM, then SIGKILL after a
timeout); signals go to the child's group, so its own sub-processes (registry workers) get
them too. Each child also gets SIGTERM from the kernel when `nimbus up` dies (even by
SIGKILL), so none outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from nimbus.parentdeath import preexec
from nimbus.up.stack import ServiceSpec

# Between two readiness checks of a starting child.
PROBE_INTERVAL = 0.1
# Bytes read from the end of a log to show why a child died.
TAIL_BYTES = 64 * 1024


class StartError(Exception):
    """A child could not be started or did not become ready; the message says which and why."""

    def __init__(self, message: str, child: Child | None = None) -> None:
        super().__init__(message)
        self.child = child


@dataclass
class Child:
    spec: ServiceSpec
    process: asyncio.subprocess.Process
    log_path: Path
    log_offset: int  # where this run's lines start in the log
    exited: asyncio.Task[int]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return not self.exited.done()

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    def how_it_ended(self) -> str:
        code = self.returncode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"


def _open_log(path: Path) -> tuple[BinaryIO, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "ab")  # handed to the child, then closed
    return log, log.seek(0, os.SEEK_END)


def _tail(path: Path, start: int, lines: int) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(max(start, log.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    def __init__(self, log_dir: Path, env: Mapping[str, str], stop_timeout: float) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []

    async def spawn(self, spec: ServiceSpec) -> Child:
        log_path = self.log_dir / f"{spec.slug}.log"
        log, offset = await asyncio.to_thread(_open_log, log_path)
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                process_group=0,
                # A SIGKILLed `nimbus up` cannot stop its children: the kernel does.
                preexec_fn=preexec(signal.SIGTERM),
            )
        except OSError as error:
            raise StartError(
                f"cannot start {spec.name}: {spec.argv[0]}: {error.strerror}"
            ) from None
        finally:
            log.close()
        exited = asyncio.create_task(process.wait(), name=f"wait-{spec.slug}")
        child = Child(spec, process, log_path, offset, exited)
        self.children.append(child)
        return child

    async def wait_ready(self, child: Child, within: float, interrupted: asyncio.Event) -> bool:
        """True once the child serves; False when `interrupted` is set first.

        Raises StartError when a child exits or this one does not serve within `within` seconds.
        """
        deadline = time.monotonic() + within
        while not interrupted.is_set():
            # The one starting, or one it depends on.
            for started in self.children:
                if not started.running:
                    during = "it" if started is child else child.spec.name
                    raise StartError(
                        f"{started.spec.name} {started.how_it_ended()} while {during} was starting",
                        started,
                    )
            if await child.spec.probe.ready():
                return True
            if time.monotonic() > deadline:
                raise StartError(
                    f"{child.spec.name} did not become ready within {within:g}s", child
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(interrupted.wait(), PROBE_INTERVAL)
        return False

    async def first_exit(self) -> Child:
        """The first child to exit (waits as long as they all run)."""
        by_task = {child.exited: child for child in self.children}
        done, _ = await asyncio.wait(by_task, return_when=asyncio.FIRST_COMPLETED)
        return by_task[next(iter(done))]

    async def stop(self, child: Child, hurry: asyncio.Event) -> str:
        """Stop one child: SIGTERM to its group, SIGKILL after the timeout (or at once when
        `hurry` is set). Says how it ended."""
        if not child.running:
            return f"had already stopped: it {child.how_it_ended()}"
        self._signal(child, signal.SIGTERM)
        hurried = asyncio.create_task(hurry.wait())
        try:
            await asyncio.wait(
                {child.exited, hurried},
                timeout=self.stop_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            hurried.cancel()
        if child.running:
            self._signal(child, signal.SIGKILL)
            await child.exited
            return "killed" if hurry.is_set() else "killed (did not stop in time)"
        return "stopped" if child.returncode == 0 else f"stopped: it {child.how_it_ended()}"

    @staticmethod
    def _signal(child: Child, signum: signal.Signals) -> None:
        # The group is the child's own (process_group=0): its pid, alive while it runs.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    async def log_tail(self, child: Child, lines: int = 20) -> str:
        return await asyncio.to_thread(_tail, child.log_path, child.log_offset, lines)
