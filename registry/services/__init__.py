"""The registry's domain rules, one service per kind of object."""

from __future__ import annotations

from dataclasses import dataclass

from registry.events.sink import EventSink, NullSink
from registry.services.blobs import BlobService
from registry.services.manifests import ManifestService
from registry.services.repositories import RepositoryService
from registry.services.uploads import UploadService
from registry.storage.driver import StorageDriver


@dataclass
class Services:
    driver: StorageDriver
    blobs: BlobService
    uploads: UploadService
    manifests: ManifestService
    repositories: RepositoryService
    events: EventSink

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
