"""The registry's domain rules, one service per kind of object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.events.sink import EventSink, NullSink
from registry.services.blobs import BlobService
from registry.services.manifests import ManifestService
from registry.services.repositories import RepositoryService
from registry.services.uploads import UploadService
from registry.storage.driver import StorageDriver

if TYPE_CHECKING:
    from registry.lifecycle import Lifecycle


@dataclass
class Services:
    driver: StorageDriver
    blobs: BlobService
    uploads: UploadService
    manifests: ManifestService
    repositories: RepositoryService
    events: EventSink
    # Immutable tags, quotas, pull times and retention; None until installed.
    lifecycle: Lifecycle | None = None

    def install_lifecycle(self, lifecycle: Lifecycle) -> None:
        """The lifecycle rules apply to every push, delete and pull from now on."""
        self.lifecycle = lifecycle
        self.manifests.hooks = lifecycle
        self.uploads.hooks = lifecycle
        self.blobs.hooks = lifecycle

    @classmethod
    def build(
        cls,
        driver: StorageDriver,
        events: EventSink | None = None,
        emit_blob_events: bool = True,
        emit_pulls: bool = False,
        link_cache_ttl: float = 1.0,
    ) -> Services:
        sink: EventSink = events or NullSink()
        blobs = BlobService(driver, sink)
        return cls(
            driver=driver,
            blobs=blobs,
            uploads=UploadService(driver, blobs, sink, emit_blob_events),
            manifests=ManifestService(driver, blobs, sink, emit_pulls, link_cache_ttl),
            repositories=RepositoryService(driver),
            events=sink,
        )
