"""Blobs: content-addressed data shared by repositories through per-repository links."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nimbus.oci.mediatypes import OCTET_STREAM
from registry.context import RequestContext
from registry.errors import ErrorCode, OCIError
from registry.events.sink import Action, EventSink, NullSink, RegistryEvent
from registry.lifecycle.hooks import NO_HOOKS, LifecycleHooks
from registry.reference import Digest
from registry.storage import paths
from registry.storage.driver import PathNotFoundError, StorageDriver

# How long a blob's redirect URL stays valid (as in Distribution: 20 minutes).
REDIRECT_EXPIRES = 20 * 60


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int
    # A local file when the driver has one, so the edge can serve it with sendfile.
    local_path: str | None


class BlobService:
    def __init__(self, driver: StorageDriver, events: EventSink | None = None) -> None:
        self.driver = driver
        self.events: EventSink = events or NullSink()
        # Quotas (registry.lifecycle): a mount adds the blob to the repository's usage.
        self.hooks: LifecycleHooks = NO_HOOKS

    async def exists_in(self, name: str, digest: Digest) -> bool:
        # Both looked up at once: a manifest PUT asks this of every layer.
        link, data = await asyncio.gather(
            self.driver.stat(paths.layer_link(name, digest)),
            self.driver.stat(paths.blob_data(digest)),
        )
        return link is not None and data is not None

    async def stat(self, name: str, digest: Digest) -> BlobInfo:
        if await self.driver.stat(paths.layer_link(name, digest)) is None:
            raise OCIError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)})
        data = paths.blob_data(digest)
        info = await self.driver.stat(data)
        if info is None:
            raise OCIError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)})
        return BlobInfo(digest, info.size, self.driver.local_path(data))

    async def redirect_url(self, digest: Digest) -> str | None:
        """A URL of the store that clients may fetch the blob from, when the driver has one."""
        return await self.driver.url_for(paths.blob_data(digest), REDIRECT_EXPIRES)

    def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        return self.driver.read(paths.blob_data(digest), offset, length)

    async def link(self, name: str, digest: Digest) -> None:
        await self.driver.put_content(paths.layer_link(name, digest), str(digest).encode())

    async def delete(self, name: str, digest: Digest, ctx: RequestContext) -> None:
        """Unlink from the repository; the data goes when garbage collection finds it unused."""
        try:
            await self.driver.delete(paths.layer_link(name, digest).rsplit("/", 1)[0])
        except PathNotFoundError:
            raise OCIError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)}) from None

    async def mount(
        self, name: str, digest: Digest, from_name: str, ctx: RequestContext
    ) -> BlobInfo | None:
        """Link a blob another repository has; None when that repository does not have it."""
        if not await self.exists_in(from_name, digest):
            return None
        source = await self.stat(from_name, digest)
        async with self.hooks.linking_blob(name, digest, source.size):
            await self.link(name, digest)
        info = await self.stat(name, digest)
        await self.events.emit(
            RegistryEvent(
                Action.MOUNT,
                name,
                str(digest),
                OCTET_STREAM,
                info.size,
                is_blob=True,
                from_repository=from_name,
                context=ctx,
            )
        )
        return info
