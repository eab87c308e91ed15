"""A SIGKILLed supervisor leaves nothing running: `nimbus up`'s children and a registry's
workers get SIGTERM from the kernel when the process that started them dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from tests.e2e.conftest import UpFactory, alive, descendants
from tests.fixtures.registry import RegistryFactory

# How long the kernel's SIGTERM and the services' own shutdown may take.
GONE_WITHIN = 15.0


async def gone(pids: list[int], within: float = GONE_WITHIN) -> list[int]:
    """The pids still alive after `within` seconds (or none, as soon as all are gone)."""
    deadline = time.monotonic() + within
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.1)


async def test_sigkilled_up_takes_its_children_with_it(up_factory: UpFactory) -> None:
    up = up_factory("--sites", "2")
    await up.wait_ready()
    # nats-server, two registries, the notifier, the replicator: each a child of `nimbus up`.
    children = [pid for pid in up.pids if alive(pid)]
    assert len(children) >= 5, up.output()
    assert up.proc is not None
    os.kill(up.proc.pid, signal.SIGKILL)
    up.proc.wait(10)
    assert await gone(children) == []


async def test_sigkilled_registry_takes_its_workers_with_it(
    registry_factory: RegistryFactory,
) -> None:
    registry = registry_factory(["--workers", "2"])
    workers = descendants(registry.pid)
    assert len([pid for pid in workers if alive(pid)]) >= 2, workers
    registry.kill()
    assert await gone(workers) == []
