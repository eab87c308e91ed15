"""The lifecycle rules, stored once in the storage driver so that every replica agrees.

Where they live: one JSON document, `_lifecycle/policies.json`, beside the registry's content
(filesystem or S3). Which wins: the YAML's `lifecycle.policies` only seeds that document when
storage holds none yet (the first replica to start writes it); from then on the stored
document is the truth, edited over gRPC (`SetLifecyclePolicies`, `nimbus ctl retention|immutable|
quota`), and a YAML that says otherwise is logged at start and ignored. Each replica re-reads
the document at most every `lifecycle.reload_interval` seconds; its own edits apply at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from registry.lifecycle.rules import Policies
from registry.lifecycle.values import PolicyError
from registry.storage import paths
from registry.storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("nimbus.registry.lifecycle")


class PolicyConflict(Exception):
    """The stored rules changed since the revision the edit was based on."""


@dataclass(frozen=True, slots=True)
class StoredPolicies:
    policies: Policies
    # 0: nothing stored yet (no seed, no edit).
    revision: int = 0
    updated: float = 0.0
    # "config" (seeded from the YAML) or "admin" (edited over gRPC).
    source: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "revision": self.revision,
                "updated": self.updated,
                "source": self.source,
                "policies": self.policies.to_json(),
            },
            indent=1,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> StoredPolicies:
        raw = json.loads(data)
        return cls(
            Policies.parse(raw.get("policies"), paths.lifecycle_policies()),
            int(raw.get("revision", 0)),
            float(raw.get("updated", 0.0)),
            str(raw.get("source", "")),
        )


class PolicyStore:
    def __init__(
        self, driver: StorageDriver, seed: Policies | None, reload_interval: float = 5.0
    ) -> None:
        self.driver = driver
        self.seed = seed
        self.reload_interval = reload_interval
        self._current: StoredPolicies | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> Policies:
        return (await self.document()).policies

    async def document(self, fresh: bool = False) -> StoredPolicies:
        """The stored rules, re-read when older than the reload interval (or ``fresh``)."""
        now = time.monotonic()
        if not fresh and self._current is not None and now - self._loaded_at < self.reload_interval:
            return self._current
        async with self._lock:
            if (
                not fresh
                and self._current is not None
                and time.monotonic() - self._loaded_at < self.reload_interval
            ):
                return self._current
            try:
                self._current = await self._load()
            except (OSError, PolicyError, ValueError) as error:
                if self._current is None:
                    raise
                # Keep enforcing the last rules read rather than none at all.
                log.warning("lifecycle rules not re-read", extra={"error": str(error)})
            self._loaded_at = time.monotonic()
            return self._current

    async def _load(self) -> StoredPolicies:
        try:
            return StoredPolicies.from_bytes(
                await self.driver.get_content(paths.lifecycle_policies())
            )
        except PathNotFoundError:
            pass
        if self.seed is None:
            return StoredPolicies(Policies())
        seeded = StoredPolicies(self.seed, 1, time.time(), "config")
        await self.driver.put_content(paths.lifecycle_policies(), seeded.to_bytes())
        log.info("lifecycle rules seeded from the configuration")
        return seeded

    async def open(self) -> None:
        """Seed from the YAML if storage has no rules; say so when the YAML disagrees."""
        stored = await self.document(fresh=True)
        if self.seed is not None and stored.source and stored.policies != self.seed:
            log.warning(
                "lifecycle.policies of the configuration differ from the stored rules, which win "
                "(edit them over gRPC: nimbus ctl retention|immutable|quota)",
                extra={"revision": stored.revision, "source": stored.source},
            )

    async def replace(self, policies: Policies, expected_revision: int = 0) -> StoredPolicies:
        """Store new rules; with ``expected_revision``, only if the stored ones are that one."""
        async with self._lock:
            try:
                current = StoredPolicies.from_bytes(
                    await self.driver.get_content(paths.lifecycle_policies())
                )
            except PathNotFoundError:
                current = StoredPolicies(Policies())
            if expected_revision and expected_revision != current.revision:
                raise PolicyConflict(
                    f"the rules changed meanwhile (revision {current.revision}, the edit was "
                    f"based on {expected_revision}); read them again"
                )
            stored = StoredPolicies(policies, current.revision + 1, time.time(), "admin")
            await self.driver.put_content(paths.lifecycle_policies(), stored.to_bytes())
            self._current, self._loaded_at = stored, time.monotonic()
            return stored
