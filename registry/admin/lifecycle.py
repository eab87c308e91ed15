"""Lifecycle rules, quota usage, retention and scrub progress as `nimbus.v1` messages, and back."""

from __future__ import annotations

from typing import Any

from google.protobuf.duration_pb2 import Duration

from nimbus.timestamps import timestamp
from proto.nimbus.v1 import registry_pb2 as pb
from registry.lifecycle.quotas import QuotaUsage
from registry.lifecycle.retention import RetentionProgress, RetentionStats
from registry.lifecycle.rules import Policies
from registry.lifecycle.scrub import ScrubProgress, ScrubStats
from registry.lifecycle.store import StoredPolicies


def _duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def policies(stored: StoredPolicies) -> pb.LifecyclePolicies:
    p = stored.policies
    return pb.LifecyclePolicies(
        immutable=[pb.ImmutableTagRule(name=r.name, pattern=r.pattern) for r in p.immutable],
        quotas=[
            pb.QuotaRule(name=r.name, repositories=r.repositories, bytes=r.bytes, tags=r.tags)
            for r in p.quotas
        ],
        retention=[
            pb.RetentionRule(
                name=r.name,
                repositories=r.repositories,
                keep_last=r.keep_last,
                pushed_within=_duration(r.pushed_within),
                pulled_within=_duration(r.pulled_within),
                keep_tags=list(r.keep_tags),
                untagged_older_than=_duration(r.untagged_older_than),
                schedule=r.schedule,
            )
            for r in p.retention
        ],
        revision=stored.revision,
        updated=timestamp(stored.updated) if stored.updated else None,
        source=stored.source,
    )


def _seconds(message: Any, field: str) -> float | None:
    if not message.HasField(field):
        return None
    seconds: float = getattr(message, field).ToNanoseconds() / 1e9
    return seconds


def parse_policies(message: pb.LifecyclePolicies) -> Policies:
    """The same validation as the YAML's: PolicyError names the rule index and field."""
    raw: dict[str, Any] = {
        "immutable": [
            {**({"name": r.name} if r.name else {}), "pattern": r.pattern}
            for r in message.immutable
        ],
        "quotas": [
            {
                **({"name": r.name} if r.name else {}),
                "repositories": r.repositories,
                "bytes": r.bytes,
                "tags": r.tags,
            }
            for r in message.quotas
        ],
        "retention": [],
    }
    for r in message.retention:
        rule: dict[str, Any] = {"repositories": r.repositories}
        if r.name:
            rule["name"] = r.name
        if r.HasField("keep_last"):
            rule["keep_last"] = r.keep_last
        for field in ("pushed_within", "pulled_within", "untagged_older_than"):
            seconds = _seconds(r, field)
            if seconds is not None:
                rule[field] = seconds
        if r.keep_tags:
            rule["keep_tags"] = list(r.keep_tags)
        if r.schedule:
            rule["schedule"] = r.schedule
        raw["retention"].append(rule)
    return Policies.parse(raw, "policies")


def quota_usage(item: QuotaUsage) -> pb.QuotaUsage:
    return pb.QuotaUsage(
        repository=item.repository,
        rule=item.rule,
        bytes_used=item.bytes_used,
        bytes_limit=item.bytes_limit,
        tags_used=item.tags_used,
        tags_limit=item.tags_limit,
    )


def retention_stats(item: RetentionStats) -> pb.RetentionStats:
    return pb.RetentionStats(
        repositories=item.repositories,
        tags_kept=item.tags_kept,
        tags_deleted=item.tags_deleted,
        manifests_deleted=item.manifests_deleted,
        bytes_freed=item.bytes_freed,
        skipped=item.skipped,
        started=timestamp(item.started) if item.started else None,
        finished=timestamp(item.finished) if item.finished else None,
    )


def retention_progress(item: RetentionProgress) -> pb.RetentionProgress:
    entry = None
    if item.item is not None:
        entry = pb.RetentionItem(
            kind=item.item.kind.name,
            repository=item.item.repository,
            tag=item.item.tag,
            digest=item.item.digest,
            size=item.item.size,
            rule=item.item.rule,
        )
    return pb.RetentionProgress(
        phase=item.phase.name,
        message=item.message,
        item=entry,
        stats=retention_stats(item.stats),
        dry_run=item.dry_run,
    )


def scrub_stats(item: ScrubStats) -> pb.ScrubStats:
    ticks = item.ticks
    return pb.ScrubStats(
        blobs_checked=item.blobs_checked,
        bytes_hashed=item.bytes_hashed,
        corrupt=item.corrupt,
        quarantined=item.quarantined,
        manifests_checked=item.manifests_checked,
        missing=item.missing,
        rate=item.rate,
        tick_seconds=ticks.tick_seconds if ticks else 0.0,
        tick_budget=ticks.budget if ticks else 0,
        max_tick_bytes=ticks.max_tick_bytes if ticks else 0,
        ticks=ticks.ticks if ticks else 0,
        started=timestamp(item.started) if item.started else None,
        finished=timestamp(item.finished) if item.finished else None,
    )


def scrub_progress(item: ScrubProgress) -> pb.ScrubProgress:
    entry = None
    if item.item is not None:
        entry = pb.ScrubItem(
            kind=item.item.kind.name,
            digest=item.item.digest,
            actual_digest=item.item.actual,
            repository=item.item.repository,
            manifest=item.item.manifest,
            size=item.item.size,
            quarantined=item.item.quarantined,
        )
    return pb.ScrubProgress(
        phase=item.phase.name,
        message=item.message,
        item=entry,
        stats=scrub_stats(item.stats),
        dry_run=item.dry_run,
    )
