"""What the manifest and upload services ask the lifecycle layer; doing nothing by default.

The services call these at the points where a rule can refuse (a tag moved, a delete, bytes
added) or needs to know (a pull); `registry.lifecycle.Lifecycle` answers with the rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from registry.reference import Digest


class LifecycleHooks:
    @asynccontextmanager
    async def putting_manifest(
        self, name: str, tag: str, digest: Digest, size: int
    ) -> AsyncIterator[None]:
        """Around storing a manifest (and pointing ``tag`` at it): refuses with DENIED."""
        yield

    async def deleting(self, name: str, tags: Sequence[str]) -> None:
        """Before tags are removed (a tag delete, or a manifest delete taking its tags)."""

    def pulled(self, name: str, digest: Digest, tag: str) -> None:
        """A manifest was read by a client (``tag`` empty when pulled by digest)."""

    async def admitting(self, name: str, size: int, digest: Digest | None = None) -> None:
        """An upload will hold ``size`` bytes once this request is done: refuse it early."""

    @asynccontextmanager
    async def linking_blob(self, name: str, digest: Digest, size: int) -> AsyncIterator[None]:
        """Around linking a finished (or mounted) blob into a repository."""
        yield


NO_HOOKS = LifecycleHooks()
