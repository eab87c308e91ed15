"""Faults at random while the load runs, each logged with its time: SIGKILL and restart of a
registry worker, a registry replica, a notifier, a replicator or a NATS node; SIGSTOP then
SIGCONT of any of them; a webhook receiver down for a while; a peer registry down for a while.
One fault at a time, each undone before the next."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.soak.receivers import Receiver
from bench.soak.topology import Service, Topology


@dataclass
class FaultLog:
    lines: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def log(self, kind: str, what: str, say: Callable[[str], None]) -> None:
        self.kinds[kind] += 1
        line = f"{time.strftime('%H:%M:%S')} {kind} {what}"
        self.lines.append(line)
        say(line)


class Faults:
    def __init__(
        self,
        top: Topology,
        receivers: list[Receiver],
        say: Callable[[str], None],
        seed: int = 2,
    ) -> None:
        self.top = top
        self.receivers = receivers
        self.say = say
        self.rng = random.Random(seed)
        self.log = FaultLog()

    async def _restart(self, service: Service) -> None:
        await asyncio.to_thread(service.start)

    async def kill_restart(self, service: Service) -> None:
        self.log.log("kill", service.name, self.say)
        await asyncio.to_thread(service.kill)
        await asyncio.sleep(self.rng.uniform(1, 5))
        await self._restart(service)

    async def kill_worker(self, service: Service) -> None:
        workers = service.workers()
        if not workers:
            return await self.kill_restart(service)
        pid = self.rng.choice(workers)
        self.log.log("kill-worker", f"{service.name} pid {pid}", self.say)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # The replica runs on with one worker (which adopts the dead one's outbox), then is
        # restarted with both.
        await asyncio.sleep(self.rng.uniform(3, 12))
        await asyncio.to_thread(service.stop)
        await self._restart(service)

    async def freeze(self, service: Service) -> None:
        seconds = self.rng.uniform(2, 8)
        self.log.log("freeze", f"{service.name} for {seconds:.1f}s", self.say)
        service.freeze()
        await asyncio.sleep(seconds)
        service.thaw()

    async def receiver_down(self, receiver: Receiver) -> None:
        seconds = self.rng.uniform(5, 20)
        self.log.log("receiver-down", f"{receiver.name} for {seconds:.1f}s", self.say)
        await receiver.stop()
        await asyncio.sleep(seconds)
        await receiver.start()

    async def peer_down(self, service: Service) -> None:
        seconds = self.rng.uniform(5, 20)
        self.log.log("peer-down", f"{service.name} for {seconds:.1f}s", self.say)
        await asyncio.to_thread(service.stop)
        await asyncio.sleep(seconds)
        await self._restart(service)

    async def one(self) -> None:
        top = self.top
        registries = [r for site in top.sites.values() for r in site.replicas]
        multi = [r for r in registries if "--workers" in r.argv]
        every = top.services()
        choice = self.rng.choices(
            ["kill", "kill-worker", "freeze", "receiver-down", "peer-down"],
            weights=[35, 15, 25, 10, 15],
        )[0]
        if choice == "kill":
            pool = [*top.nats, *registries, *top.notifiers, *top.replicators.values()]
            await self.kill_restart(self.rng.choice(pool))
        elif choice == "kill-worker":
            await self.kill_worker(self.rng.choice(multi))
        elif choice == "freeze":
            await self.freeze(self.rng.choice(every))
        elif choice == "receiver-down":
            await self.receiver_down(self.rng.choice(self.receivers))
        else:
            # The peers: b's replicas (a peer of a), c, and a's first replica (b's peer).
            peers = [*top.sites["b"].replicas, *top.sites["c"].replicas, top.sites["a"].replicas[0]]
            await self.peer_down(self.rng.choice(peers))

    async def run(self, until: float, pause: tuple[float, float] = (3.0, 10.0)) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(*pause))
            if time.monotonic() >= until:
                break
            try:
                await self.one()
            except Exception as exc:
                # A service that does not come back is a finding, not the end of the soak.
                self.log.errors.append(f"{time.strftime('%H:%M:%S')} {exc!r}")
                self.say(f"fault handling failed: {exc!r}")
                for service in self.top.services():
                    if not service.running:
                        try:
                            await self._restart(service)
                        except Exception as again:
                            self.log.errors.append(f"{service.name} restart: {again!r}")
