"""Pulls as the OCI handlers ask for them, without the cache: local repositories only.

A registry with no upstream configured uses `Pulls` and never imports the cache's upstream
clients; with upstreams, `registry.proxy.service.ProxyService` (a subclass) serves the proxied
names from their cache and passes every other name through as this does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from registry.context import RequestContext
from registry.errors import OCIError
from registry.reference import Digest
from registry.services import Services
from registry.services.blobs import BlobInfo
from registry.services.manifests import Manifest
from registry.services.repositories import Page


@dataclass(frozen=True, slots=True)
class ServedManifest:
    manifest: Manifest
    # The `Warning` header's value when the cache served it stale.
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class ServedTags:
    page: Page
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class ServedReferrers:
    descriptors: list[dict[str, Any]]
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class BlobStream:
    """A blob arriving from the upstream; `size` is None when the upstream sent no length.
    ``read(first, last)`` streams bytes first to last (inclusive; None: to the end)."""

    digest: Digest
    size: int | None
    read: Callable[[int, int | None], AsyncIterator[bytes]]

    def chunks(self) -> AsyncIterator[bytes]:
        return self.read(0, None)


class FillFailedError(Exception):
    """The fill a client was reading from failed; the client's response must be cut off."""

    def __init__(self, error: OCIError) -> None:
        super().__init__(error.message)
        self.error = error


class Pulls:
    """Every repository is local: manifests and blobs come from storage as they are."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def start(self) -> None:
        """Nothing runs in the background without a cache."""

    async def close(self) -> None:
        """Nothing held without a cache."""

    def check_writable(self, name: str, namespace: str | None = None) -> None:
        """Every local repository takes pushes and deletes."""

    async def manifest(
        self,
        name: str,
        reference: str,
        accept: list[str],
        ctx: RequestContext,
        namespace: str | None = None,
        count_pull: bool = True,
    ) -> ServedManifest:
        return ServedManifest(
            await self.services.manifests.get(name, reference, accept, ctx, count_pull)
        )

    async def blob_info(self, name: str, digest: Digest, namespace: str | None = None) -> BlobInfo:
        return await self.services.blobs.stat(name, digest)

    async def blob(
        self, name: str, digest: Digest, ctx: RequestContext, namespace: str | None = None
    ) -> BlobInfo | BlobStream:
        return await self.services.blobs.stat(name, digest)

    async def tags(
        self, name: str, n: int | None, last: str | None, namespace: str | None = None
    ) -> ServedTags:
        return ServedTags(await self.services.repositories.tags(name, n, last))

    async def referrers(
        self,
        name: str,
        subject: Digest,
        artifact_type: str | None,
        namespace: str | None = None,
    ) -> ServedReferrers:
        return ServedReferrers(
            await self.services.manifests.referrers(name, subject, artifact_type)
        )
