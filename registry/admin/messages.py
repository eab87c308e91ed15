"""Service results as `nimbus.v1` protobuf messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from nimbus.oci.documents import Descriptor, Platform
from nimbus.timestamps import timestamp
from proto.nimbus.v1 import registry_pb2 as pb
from registry.services.gc import GcItem, GcProgress, GcStats
from registry.services.inventory import ManifestDetails, RepositorySummary, StoreStats, TagInfo


def _timestamp_ns(ns: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


def repository(item: RepositorySummary) -> pb.Repository:
    return pb.Repository(
        name=item.name,
        tag_count=item.tag_count,
        manifest_count=item.manifest_count,
        size=item.size,
        last_pushed=_timestamp_ns(item.last_pushed_ns) if item.last_pushed_ns else None,
    )


def tag(item: TagInfo) -> pb.Tag:
    return pb.Tag(
        name=item.name,
        digest=item.digest,
        media_type=item.media_type,
        size=item.size,
        updated=_timestamp_ns(item.updated_ns) if item.updated_ns else None,
        last_pulled=_timestamp_ns(int(item.last_pulled * 1e9)) if item.last_pulled else None,
    )


def platform(item: Platform) -> pb.Platform:
    return pb.Platform(
        os=item.os, architecture=item.architecture, variant=item.variant, os_version=item.os_version
    )


def descriptor(item: Descriptor | None) -> pb.Descriptor | None:
    return None if item is None else _descriptor(item)


def _descriptor(item: Descriptor) -> pb.Descriptor:
    return pb.Descriptor(
        media_type=item.media_type,
        digest=item.digest,
        size=item.size,
        artifact_type=item.artifact_type,
        annotations=item.annotations,
        platform=platform(item.platform) if item.platform else None,
    )


def manifest(item: ManifestDetails) -> pb.ManifestInfo:
    return pb.ManifestInfo(
        repository=item.repository,
        digest=item.digest,
        media_type=item.media_type,
        size=item.size,
        total_size=item.total_size,
        artifact_type=item.artifact_type,
        tags=item.tags,
        platforms=[platform(p) for p in item.platforms],
        config=descriptor(item.config),
        layers=[_descriptor(d) for d in item.layers],
        manifests=[_descriptor(d) for d in item.manifests],
        referrers=[_descriptor(d) for d in item.referrers],
        subject=descriptor(item.subject),
        annotations=item.annotations,
    )


def gc_stats(item: GcStats) -> pb.GarbageCollectStats:
    return pb.GarbageCollectStats(
        repositories=item.repositories,
        manifests_marked=item.manifests_marked,
        blobs_marked=item.blobs_marked,
        blobs_scanned=item.blobs_scanned,
        blobs_kept_recent=item.blobs_kept_recent,
        blobs_deleted=item.blobs_deleted,
        bytes_freed=item.bytes_freed,
        manifests_deleted=item.manifests_deleted,
        uploads_deleted=item.uploads_deleted,
        started=timestamp(item.started),
        finished=timestamp(item.finished),
    )


def gc_item(item: GcItem | None) -> pb.GarbageCollectItem | None:
    if item is None:
        return None
    return pb.GarbageCollectItem(
        kind=item.kind.name,
        digest=item.digest,
        repository=item.repository,
        upload_id=item.upload_id,
        size=item.size,
    )


def gc_progress(item: GcProgress) -> pb.GarbageCollectProgress:
    return pb.GarbageCollectProgress(
        phase=item.phase.name,
        message=item.message,
        stats=gc_stats(item.stats),
        item=gc_item(item.item),
        dry_run=item.dry_run,
    )


def stats(item: StoreStats, last_gc: GcStats | None) -> pb.RegistryStats:
    return pb.RegistryStats(
        repositories=item.repositories,
        tags=item.tags,
        manifests=item.manifests,
        blobs=item.blobs,
        blob_bytes=item.blob_bytes,
        uploads_in_progress=item.uploads_in_progress,
        last_gc=gc_stats(last_gc) if last_gc else None,
    )
