"""A lease in storage: one holder of a job (retention) at a time across replicas.

The storage driver has no compare-and-set, so taking a lease is write-then-confirm: a free or
expired lease is written with this holder's id, and read back after a settle delay; only the
holder whose id is still there holds it. Two replicas would both believe they hold it only if
one took longer than the settle delay between reading the lease free and writing it. A holder
renews the lease every third of its time to live while its job runs, and frees it at the end;
a crashed holder's lease expires after `ttl` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from registry.storage import paths
from registry.storage.driver import PathNotFoundError, StorageDriver


class LeaseHeld(Exception):
    """Another holder runs the job."""


class Lease:
    def __init__(
        self, driver: StorageDriver, job: str, ttl: float = 60.0, settle: float = 0.2
    ) -> None:
        self.driver = driver
        self.path = paths.lifecycle_lease(job)
        self.job = job
        self.ttl = ttl
        self.settle = settle
        self._local = asyncio.Lock()

    async def _read(self) -> dict[str, object] | None:
        try:
            raw = json.loads(await self.driver.get_content(self.path))
        except PathNotFoundError:
            return None
        except ValueError:
            return None
        return raw if isinstance(raw, dict) else None

    async def _write(self, holder: str) -> None:
        body = {
            "holder": holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": time.time() + self.ttl,
        }
        await self.driver.put_content(self.path, json.dumps(body).encode())

    @staticmethod
    def _describe(current: dict[str, object]) -> str:
        return f"{current.get('host', '?')} pid {current.get('pid', '?')}"

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[str]:
        """Hold the lease for the body; raises LeaseHeld when another holder has it."""
        if self._local.locked():
            raise LeaseHeld(f"a {self.job} run is already in progress in this process")
        async with self._local:
            holder = uuid.uuid4().hex
            current = await self._read()
            if current is not None and float(str(current.get("expires", 0))) > time.time():
                raise LeaseHeld(f"a {self.job} run is in progress on {self._describe(current)}")
            await self._write(holder)
            await asyncio.sleep(self.settle)
            current = await self._read()
            if current is None or current.get("holder") != holder:
                raise LeaseHeld(
                    f"a {self.job} run started on {self._describe(current or {})} at once"
                )
            renew = asyncio.create_task(self._renew(holder))
            try:
                yield holder
            finally:
                renew.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renew
                current = await self._read()
                if current is not None and current.get("holder") == holder:
                    with contextlib.suppress(PathNotFoundError):
                        await self.driver.delete(self.path)

    async def _renew(self, holder: str) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self._write(holder)
