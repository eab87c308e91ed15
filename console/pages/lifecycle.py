"""Lifecycle: the stored rules (retention, immutable tags, quotas with their usage) and a
retention run, a dry run first, its progress streamed like garbage collection's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from console import sse
from console.clients import REGISTRY, GrpcClients
from console.format import human_size
from console.guards import require_admin
from console.render import render
from console.state import GRPC
from proto.nimbus.v1 import registry_pb2 as rpb

RETENTION_KINDS = {rpb.RetentionItem.TAG: "tag", rpb.RetentionItem.MANIFEST: "manifest"}
RETENTION_PHASES = {
    rpb.RetentionProgress.PLAN: "Planning",
    rpb.RetentionProgress.DELETE_TAGS: "Deleting tags",
    rpb.RetentionProgress.DELETE_MANIFESTS: "Deleting manifests",
    rpb.RetentionProgress.DONE: "Done",
}
# The units the YAML takes, largest first: a rule reads back as the operator would write it.
_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def duration_text(duration: Any) -> str:
    """A protobuf Duration as "7d", "26h", "90s" (the largest unit that divides it)."""
    nanos = int(duration.ToNanoseconds())
    if nanos % 1_000_000_000:
        return f"{nanos / 1e9:g}s"
    seconds = nanos // 1_000_000_000
    for unit, size in _UNITS:
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return "0s"


@dataclass(frozen=True, slots=True)
class RetentionView:
    """A retention rule and what it keeps, each keep as a phrase."""

    rule: Any
    keeps: list[str]
    untagged: str


def retention_view(rule: Any) -> RetentionView:
    keeps = []
    if rule.HasField("keep_last"):
        keeps.append(f"the last {rule.keep_last} pushed")
    if rule.HasField("pushed_within"):
        keeps.append(f"pushed within {duration_text(rule.pushed_within)}")
    if rule.HasField("pulled_within"):
        keeps.append(f"pulled within {duration_text(rule.pulled_within)}")
    keeps.extend(f"matching {glob}" for glob in rule.keep_tags)
    untagged = (
        f"deleted after {duration_text(rule.untagged_older_than)}"
        if rule.HasField("untagged_older_than")
        else "kept"
    )
    return RetentionView(rule, keeps, untagged)


@dataclass(frozen=True, slots=True)
class QuotaView:
    """A quota rule and the usage of each repository it applies to."""

    rule: Any
    usage: list[Any]


def quota_views(policies: Any, stats: Any) -> list[QuotaView]:
    return [
        QuotaView(rule, sorted((u for u in stats.quotas if u.rule == rule.name), key=_by_repo))
        for rule in policies.quotas
    ]


def _by_repo(usage: Any) -> str:
    return str(usage.repository)


def retention_fields(item: Any) -> dict[str, Any]:
    """A RetentionProgress as the live retention panel reads it (phase 1 to 4, 4 done)."""
    stats = item.stats
    found: dict[str, Any] = {
        "phase": int(item.phase),
        "phase_name": RETENTION_PHASES.get(item.phase, ""),
        "message": item.message,
        "dry_run": bool(item.dry_run),
        "done": item.phase == rpb.RetentionProgress.DONE,
        "freed": human_size(stats.bytes_freed),
        "repositories": int(stats.repositories),
        "tags_kept": int(stats.tags_kept),
        "tags_deleted": int(stats.tags_deleted),
        "manifests_deleted": int(stats.manifests_deleted),
        "skipped": int(stats.skipped),
    }
    if item.HasField("item") and item.item.kind:
        entry = item.item
        found["item"] = {
            "kind": RETENTION_KINDS.get(entry.kind, "item"),
            "name": f"{entry.repository}:{entry.tag}"
            if entry.tag
            else f"{entry.repository}@{entry.digest}",
            "size": human_size(entry.size) if entry.size else "",
            "rule": entry.rule,
        }
    return found


class Lifecycle:
    """The registry's lifecycle calls; nothing is kept between requests."""

    def __init__(self, grpc_clients: GrpcClients) -> None:
        self.grpc = grpc_clients

    async def policies(self) -> Any:
        return await self.grpc.unary(
            REGISTRY, "GetLifecyclePolicies", rpb.GetLifecyclePoliciesRequest()
        )

    async def stats(self) -> Any:
        return await self.grpc.unary(REGISTRY, "GetStats", rpb.GetStatsRequest())

    def retention_progress(self, dry_run: bool, rules: list[str]) -> AsyncIterator[Any]:
        request = rpb.RunRetentionRequest(dry_run=dry_run, rules=rules)
        return self.grpc.stream(REGISTRY, "RunRetention", request, 600)

    async def retention(self, dry_run: bool, rules: list[str]) -> list[Any]:
        return [p async for p in self.retention_progress(dry_run, rules)]


def _lifecycle(request: web.Request) -> Lifecycle:
    return Lifecycle(request.app[GRPC])


async def _page(
    request: web.Request,
    code: int = 200,
    run: list[Any] | None = None,
    dry_run: bool = True,
    chosen: list[str] | None = None,
    refused: str = "",
) -> web.Response:
    lifecycle = _lifecycle(request)
    policies, stats = await lifecycle.policies(), await lifecycle.stats()
    return render(
        request,
        "lifecycle.html",
        code,
        policies=policies,
        retention=[retention_view(r) for r in policies.retention],
        quotas=quota_views(policies, stats),
        run=run,
        dry_run=dry_run,
        chosen=chosen or [],
        refused=refused,
    )


async def lifecycle_page(request: web.Request) -> web.Response:
    require_admin(request)
    return await _page(request)


async def retention_run(request: web.Request) -> web.StreamResponse:
    """A retention run (or dry run): its progress streamed to the page's script, or the page."""
    require_admin(request)
    form = await request.post()
    dry_run = form.get("mode") != "run"
    # None chosen: every retention rule, as RunRetention reads an empty list.
    rules = [str(name) for name in form.getall("rule", [])]
    lifecycle = _lifecycle(request)
    if sse.wanted(request):
        return await sse.relay(
            request, lifecycle.retention_progress(dry_run, rules), "retention", retention_fields
        )
    try:
        run = await lifecycle.retention(dry_run, rules)
    except grpc.aio.AioRpcError as error:
        # Another run holds the lease: the page says so and offers the form again.
        if error.code() is not grpc.StatusCode.FAILED_PRECONDITION:
            raise
        return await _page(request, 409, None, dry_run, rules, error.details() or "")
    return await _page(request, 200, run, dry_run, rules)


def routes(r: web.UrlDispatcher) -> None:
    r.add_get("/lifecycle", lifecycle_page)
    r.add_post("/lifecycle", retention_run)
