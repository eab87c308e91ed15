"""`nimbus ctl repos|tags|manifests|gc|stats`: the registry's admin API (nimbus.v1.Registry)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from google.protobuf.duration_pb2 import Duration

from nimbus.ctl.command import Commands, Ctl, add_command, add_noun
from nimbus.ctl.output import Column, human_size
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc as pb_grpc

SERVICE = "registry"


def _stub(ctl: Ctl) -> Any:
    return pb_grpc.RegistryStub(ctl.channel(SERVICE))


def _when(stamp: Any) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    moment = datetime.fromtimestamp(stamp.seconds, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _platform(p: Any) -> str:
    text = "/".join(part for part in (p.os, p.architecture, p.variant) if part)
    return text or "-"


async def repos_list(ctl: Ctl) -> None:
    items = await ctl.pages(
        _stub(ctl).ListRepositories,
        pb.ListRepositoriesRequest(page_size=ctl.args.page_size),
        "repositories",
        ctl.args.limit,
    )
    ctl.out.table(
        items,
        [
            Column("REPOSITORY", lambda r: r.name),
            Column("TAGS", lambda r: r.tag_count),
            Column("MANIFESTS", lambda r: r.manifest_count),
        ],
        empty="no repositories",
    )


async def tags_list(ctl: Ctl) -> None:
    items = await ctl.pages(
        _stub(ctl).ListTags,
        pb.ListTagsRequest(repository=ctl.args.repository, page_size=ctl.args.page_size),
        "tags",
        ctl.args.limit,
    )
    ctl.out.table(
        items,
        [
            Column("TAG", lambda t: t.name),
            Column("DIGEST", lambda t: t.digest),
            Column("SIZE", lambda t: human_size(t.size)),
            Column("MEDIA TYPE", lambda t: t.media_type),
            Column("UPDATED (UTC)", lambda t: _when(t.updated)),
            Column("LAST PULLED (UTC)", lambda t: _when(t.last_pulled)),
        ],
        empty=f"no tags in {ctl.args.repository}",
    )


async def tags_rm(ctl: Ctl) -> None:
    reply = await _stub(ctl).DeleteTag(
        pb.DeleteTagRequest(repository=ctl.args.repository, tag=ctl.args.tag),
        timeout=ctl.timeout,
    )
    ctl.out.done(
        f"deleted tag {ctl.args.repository}:{ctl.args.tag} (was {reply.digest})",
        {"repository": ctl.args.repository, "tag": ctl.args.tag, "digest": reply.digest},
    )


async def manifests_get(ctl: Ctl) -> None:
    info = await _stub(ctl).GetManifest(
        pb.GetManifestRequest(repository=ctl.args.repository, reference=ctl.args.reference),
        timeout=ctl.timeout,
    )
    ctl.out.record(
        info,
        [
            Column("Repository", lambda m: m.repository),
            Column("Digest", lambda m: m.digest),
            Column("Media type", lambda m: m.media_type),
            Column("Artifact type", lambda m: m.artifact_type),
            Column("Size", lambda m: f"{m.size} B"),
            Column("Total size", lambda m: human_size(m.total_size)),
            Column("Tags", lambda m: list(m.tags)),
            Column("Platforms", lambda m: [_platform(p) for p in m.platforms]),
            Column("Layers", lambda m: len(m.layers)),
            Column("Manifests", lambda m: [d.digest for d in m.manifests]),
            Column("Subject", lambda m: m.subject.digest),
            Column(
                "Referrers",
                lambda m: [f"{d.digest} ({d.artifact_type or d.media_type})" for d in m.referrers],
            ),
        ],
    )


async def manifests_rm(ctl: Ctl) -> None:
    reply = await _stub(ctl).DeleteManifest(
        pb.DeleteManifestRequest(repository=ctl.args.repository, digest=ctl.args.digest),
        timeout=ctl.timeout,
    )
    untagged = f", untagged {', '.join(reply.removed_tags)}" if reply.removed_tags else ""
    ctl.out.done(
        f"deleted manifest {ctl.args.repository}@{reply.digest}{untagged}",
        {
            "repository": ctl.args.repository,
            "digest": reply.digest,
            "removed_tags": list(reply.removed_tags),
        },
    )


def _duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


async def gc(ctl: Ctl) -> None:
    request = pb.GarbageCollectRequest(
        dry_run=ctl.args.dry_run,
        delete_untagged=ctl.args.delete_untagged,
        grace_period=_duration(ctl.args.grace),
        upload_max_age=_duration(ctl.args.upload_max_age),
    )
    # No deadline: a collection of a large store takes as long as it takes.
    async for progress in _stub(ctl).GarbageCollect(request):
        if progress.HasField("item") and ctl.args.quiet:
            continue
        phase = pb.GarbageCollectProgress.Phase.Name(progress.phase).lower()
        text = f"[{phase}] {progress.message}"
        if progress.HasField("item") and progress.item.size:
            text += f" ({human_size(progress.item.size)})"
        ctl.out.stream_item(progress, text)


async def stats(ctl: Ctl) -> None:
    reply = await _stub(ctl).GetStats(pb.GetStatsRequest(), timeout=ctl.timeout)
    fields = [
        Column("Repositories", lambda s: s.repositories),
        Column("Tags", lambda s: s.tags),
        Column("Manifests", lambda s: s.manifests),
        Column("Blobs", lambda s: s.blobs),
        Column("Blob bytes", lambda s: f"{human_size(s.blob_bytes)} ({s.blob_bytes} B)"),
        Column("Uploads in progress", lambda s: s.uploads_in_progress),
    ]
    if reply.HasField("last_gc"):
        fields += [
            Column("Last GC", lambda s: _when(s.last_gc.finished)),
            Column(
                "Last GC freed",
                lambda s: (
                    f"{human_size(s.last_gc.bytes_freed)} "
                    f"({s.last_gc.blobs_deleted} blobs, {s.last_gc.uploads_deleted} uploads)"
                ),
            ),
        ]
    for i, quota in enumerate(reply.quotas):
        fields.append(Column(f"Quota {quota.repository}", _quota_column(i)))
    ctl.out.record(reply, fields)


def _quota_column(index: int) -> Any:
    return lambda s: _quota_text(s.quotas[index])


def _quota_text(q: Any) -> str:
    size = f"{human_size(q.bytes_used)} of {human_size(q.bytes_limit) if q.bytes_limit else '-'}"
    tags = f"{q.tags_used} of {q.tags_limit}" if q.tags_limit else f"{q.tags_used}"
    return f"{size}, {tags} tags (rule {q.rule})"


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=0, help="at most this many (all)")
    parser.add_argument("--page-size", type=int, default=0, help="items per call (100)")


def register(commands: Commands) -> None:
    repos = add_noun(commands, "repos", "repositories of the registry")
    _paging(add_command(repos, "list", repos_list, SERVICE, "list repositories"))

    tags = add_noun(commands, "tags", "tags of a repository")
    p = add_command(tags, "list", tags_list, SERVICE, "list the tags of a repository")
    p.add_argument("repository")
    _paging(p)
    p = add_command(tags, "rm", tags_rm, SERVICE, "delete a tag (the manifest stays)")
    p.add_argument("repository")
    p.add_argument("tag")

    manifests = add_noun(commands, "manifests", "manifests of a repository")
    p = add_command(manifests, "get", manifests_get, SERVICE, "show a manifest by tag or digest")
    p.add_argument("repository")
    p.add_argument("reference", help="tag or digest")
    p = add_command(
        manifests, "rm", manifests_rm, SERVICE, "delete a manifest and the tags pointing to it"
    )
    p.add_argument("repository")
    p.add_argument("digest")

    p = add_command(
        commands, "gc", gc, SERVICE, "garbage-collect unreferenced blobs and stale uploads"
    )
    p.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    p.add_argument(
        "--delete-untagged", action="store_true", help="also delete manifests no tag reaches"
    )
    p.add_argument(
        "--grace", type=float, help="keep unreferenced content younger than SECONDS (registry's)"
    )
    p.add_argument(
        "--upload-max-age", type=float, help="remove uploads idle for SECONDS (registry's)"
    )
    p.add_argument("--quiet", action="store_true", help="phases and totals only, no items")

    add_command(commands, "stats", stats, SERVICE, "what the registry stores")
