"""Image lifecycle: immutable tags, storage quotas, pull times, retention and the scrub.

`Lifecycle` is what the manifest and upload services call (`registry.lifecycle.hooks`), over
the rules of `registry.lifecycle.store` (stored once, shared by every replica).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.lifecycle import immutability
from registry.lifecycle.hooks import LifecycleHooks
from registry.lifecycle.pulltimes import PullTimes
from registry.lifecycle.quotas import QuotaService, QuotaUsage
from registry.lifecycle.rules import Policies
from registry.lifecycle.schedule import Schedule, run_on_schedule
from registry.lifecycle.store import PolicyStore
from registry.reference import Digest
from registry.storage import paths
from registry.storage.driver import PathNotFoundError, StorageDriver

if TYPE_CHECKING:
    from registry.lifecycle.retention import RetentionService
    from registry.lifecycle.scrub import ScrubService

__all__ = ["Lifecycle", "LifecycleSettings"]


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    seed: Policies | None = None
    reload_interval: float = 5.0
    pull_flush_interval: float = 60.0
    retention_interval: float = 0.0
    lease_ttl: float = 60.0
    scrub_schedule: Schedule | None = None
    scrub_rate: int = 0
    # Longest wait between two looks at the schedules (rules edited meanwhile).
    schedule_poll: float = 30.0


class Lifecycle(LifecycleHooks):
    def __init__(self, driver: StorageDriver, settings: LifecycleSettings) -> None:
        self.driver = driver
        self.settings = settings
        self.store = PolicyStore(driver, settings.seed, settings.reload_interval)
        # Figures kept as long as the rules are: both are re-read from storage as often.
        self.quotas = QuotaService(driver, settings.reload_interval)
        self.pulls = PullTimes(driver, settings.pull_flush_interval)
        # Called with each quota usage computed (the Prometheus gauges).
        self.on_usage: list[Callable[[QuotaUsage], None]] = []
        # Set by registry.lifecycle.setup, over the manifest service.
        self.retention: RetentionService | None = None
        self.scrub: ScrubService | None = None
        self._schedules: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.store.open()
        self.pulls.start()
        # Rules edited meanwhile are seen as soon as the store would re-read them.
        poll = min(self.settings.schedule_poll, max(1.0, self.settings.reload_interval))
        retention, scrub = self.retention, self.scrub
        if retention is not None:
            if self.settings.retention_interval > 0:
                self._schedules.append(
                    asyncio.create_task(retention.scheduled(self.settings.retention_interval))
                )

            async def rule_schedules() -> dict[str, Schedule]:
                return retention.schedules(await self.store.current())

            self._schedules.append(
                asyncio.create_task(run_on_schedule(rule_schedules, retention.run_scheduled, poll))
            )
        if scrub is not None and self.settings.scrub_schedule is not None:
            fixed = {"scrub": self.settings.scrub_schedule}

            async def scrub_schedule() -> dict[str, Schedule]:
                return fixed

            async def run_scrub(_: Sequence[str]) -> None:
                await scrub.run_scheduled()

            self._schedules.append(
                asyncio.create_task(run_on_schedule(scrub_schedule, run_scrub, poll))
            )

    async def close(self) -> None:
        for task in self._schedules:
            task.cancel()
        for task in self._schedules:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.pulls.close()

    async def _current_tag(self, name: str, tag: str) -> Digest | None:
        try:
            raw = await self.driver.get_content(paths.tag_link(name, tag))
        except PathNotFoundError:
            return None
        try:
            return Digest.parse(raw.decode().strip())
        except Exception:
            return None

    # -- hooks of the services ------------------------------------------------------------

    @asynccontextmanager
    async def putting_manifest(
        self, name: str, tag: str, digest: Digest, size: int
    ) -> AsyncIterator[None]:
        policies = await self.store.current()
        immutable = bool(tag) and policies.immutable_rule(name, tag) is not None
        quota = policies.quota_for(name)
        if not immutable and quota is None:
            yield
            return
        async with AsyncExitStack() as stack:
            # Read once, under the repository's lock, for both the quota and the rule.
            current: Digest | None = None
            if quota is not None:
                # Holds the repository's lock while the manifest and its tag are written.
                current = await self._current_tag(name, tag) if tag else None
                new_tag = bool(tag) and current is None
                await stack.enter_async_context(
                    self.quotas.adding(quota, name, digest, size, new_tag)
                )
            else:
                await stack.enter_async_context(self.quotas.lock(name))
                current = await self._current_tag(name, tag) if tag else None
            if immutable:
                immutability.check_move(policies, name, tag, current, digest)
            yield
        if quota is not None:
            self._report(await self.quotas.usage(name, quota))

    async def deleting(self, name: str, tags: Sequence[str]) -> None:
        immutability.check_delete(await self.store.current(), name, tags)
        self.quotas.forget(name)

    def collected(self) -> None:
        """A garbage collection removed data: every quota figure is read again."""
        self.quotas.forget()

    def pulled(self, name: str, digest: Digest, tag: str) -> None:
        self.pulls.record(name, digest, tag)

    async def admitting(self, name: str, size: int, digest: Digest | None = None) -> None:
        quota = (await self.store.current()).quota_for(name)
        if quota is not None:
            await self.quotas.admit(quota, name, size, digest)

    @asynccontextmanager
    async def linking_blob(self, name: str, digest: Digest, size: int) -> AsyncIterator[None]:
        quota = (await self.store.current()).quota_for(name)
        if quota is None:
            yield
            return
        async with self.quotas.adding(quota, name, digest, size):
            yield
        self._report(await self.quotas.usage(name, quota))

    # -- figures --------------------------------------------------------------------------

    def _report(self, usage: QuotaUsage) -> None:
        for callback in self.on_usage:
            callback(usage)

    async def quota_usage(self, names: Sequence[str]) -> list[QuotaUsage]:
        policies = await self.store.current()
        found: list[QuotaUsage] = []
        for name in names:
            rule = policies.quota_for(name)
            if rule is not None:
                # Asked for: read from storage, which also refreshes the kept figure.
                found.append(await self.quotas.usage(name, rule, fresh=True))
        for usage in found:
            self._report(usage)
        return found
