"""`nimbus ctl cache upstreams|repos|purge|warm`: the pull-through cache (nimbus.v1.Cache)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nimbus.ctl.command import Commands, Ctl, CtlError, add_command, add_noun
from nimbus.ctl.output import Column, human_size, short_digest
from proto.nimbus.v1 import cache_pb2 as pb
from proto.nimbus.v1 import cache_pb2_grpc as pb_grpc

SERVICE = "registry"


def _stub(ctl: Ctl) -> Any:
    return pb_grpc.CacheStub(ctl.channel(SERVICE))


def _when(stamp: Any) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return datetime.fromtimestamp(stamp.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _health(u: Any) -> str:
    if u.reachable:
        return f"ok ({u.latency.ToTimedelta().total_seconds() * 1000:.0f} ms)"
    return f"down: {u.error}"


async def upstreams(ctl: Ctl) -> None:
    reply = await _stub(ctl).ListUpstreams(pb.ListUpstreamsRequest(), timeout=ctl.timeout)
    ctl.out.table(
        list(reply.upstreams),
        [
            Column("UPSTREAM", lambda u: u.name + (" (default)" if u.is_default else "")),
            Column("URL", lambda u: u.url),
            Column("PREFIX", lambda u: u.prefix or "-"),
            Column("HEALTH", _health),
            Column("HITS", lambda u: u.stats.manifest_hits + u.stats.blob_hits),
            Column("MISSES", lambda u: u.stats.manifest_misses + u.stats.blob_misses),
            Column("FROM UPSTREAM", lambda u: human_size(u.stats.bytes_from_upstream)),
            Column("ERRORS", lambda u: u.stats.errors),
        ],
        empty="no upstreams",
    )
    if not ctl.out.json_mode:
        bound = human_size(reply.max_bytes) if reply.max_bytes else "no bound"
        ctl.out.done(f"cached: {human_size(reply.cached_bytes)} of {bound}")


async def repos(ctl: Ctl) -> None:
    items = await ctl.pages(
        _stub(ctl).ListCachedRepositories,
        pb.ListCachedRepositoriesRequest(upstream=ctl.args.upstream, page_size=ctl.args.page_size),
        "repositories",
        ctl.args.limit,
    )
    ctl.out.table(
        items,
        [
            Column("REPOSITORY", lambda r: r.name),
            Column("UPSTREAM", lambda r: r.upstream),
            Column("TAGS", lambda r: r.tag_count),
            Column("MANIFESTS", lambda r: r.manifest_count),
            Column("BLOBS", lambda r: r.blob_count),
            Column("SIZE", lambda r: human_size(r.size)),
            Column("LAST PULLED (UTC)", lambda r: _when(r.last_pulled)),
        ],
        empty="nothing cached",
    )


def _split_tag(text: str) -> tuple[str, str]:
    head, _, last = text.rpartition("/")
    if ":" in last:
        component, _, tag = last.partition(":")
        return (f"{head}/{component}" if head else component), tag
    return text, ""


async def purge(ctl: Ctl) -> None:
    if "@" in ctl.args.repository:
        raise CtlError("purge takes REPOSITORY or REPOSITORY:TAG, not a digest")
    name, tag = _split_tag(ctl.args.repository)
    reply = await _stub(ctl).Purge(pb.PurgeRequest(repository=name, tag=tag), timeout=ctl.timeout)
    what = f"{name}:{tag}" if tag else name
    ctl.out.done(
        f"purged {what}: {reply.tags_removed} tags, {reply.manifests_removed} manifests, "
        f"{reply.blobs_removed} blobs, {human_size(reply.bytes_freed)} freed",
        {
            "repository": name,
            "tag": tag,
            "tags_removed": reply.tags_removed,
            "manifests_removed": reply.manifests_removed,
            "blobs_removed": reply.blobs_removed,
            "bytes_freed": reply.bytes_freed,
        },
    )


def _step(p: Any) -> str:
    if p.done:
        return f"{p.message} ({human_size(p.bytes_fetched)} fetched)"
    kind = pb.WarmProgress.Kind.Name(p.kind).lower()
    state = "cached" if p.already_cached else f"{human_size(p.bytes_done)}/{human_size(p.size)}"
    return f"[{p.items_done}/{p.items_total}] {kind} {short_digest(p.digest)} {state}"


async def warm(ctl: Ctl) -> None:
    request = pb.WarmRequest(reference=ctl.args.reference, platforms=ctl.args.platform or [])
    # No deadline: a large image takes as long as the upstream needs.
    async for progress in _stub(ctl).Warm(request):
        ctl.out.stream_item(progress, _step(progress))


def register(commands: Commands) -> None:
    cache = add_noun(commands, "cache", "the pull-through cache of upstream registries")
    add_command(cache, "upstreams", upstreams, SERVICE, "upstreams, their health and counters")
    p = add_command(cache, "repos", repos, SERVICE, "cached repositories and their size")
    p.add_argument("--upstream", default="", help="only this upstream's")
    p.add_argument("--limit", type=int, default=0, help="at most this many (all)")
    p.add_argument("--page-size", type=int, default=0, help="items per call (100)")
    p = add_command(
        cache, "purge", purge, SERVICE, "forget a cached repository, or one tag (REPO:TAG)"
    )
    p.add_argument("repository", help="REPOSITORY or REPOSITORY:TAG (the local name)")
    p = add_command(cache, "warm", warm, SERVICE, "fetch an image into the cache now")
    p.add_argument("reference", help="NAME:TAG or NAME@DIGEST (the local name)")
    p.add_argument(
        "--platform",
        action="append",
        help="of an index, only OS/ARCH[/VARIANT] (repeat; default: all)",
    )
