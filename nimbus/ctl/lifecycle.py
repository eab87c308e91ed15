"""`nimbus ctl retention|immutable|quota`: the lifecycle rules and retention runs.

`retention list|add|rm|dry-run|run`, `immutable list|add|rm` and `quota list|add|rm` over
nimbus.v1.Registry's Get/SetLifecyclePolicies; `scrub run|dry-run` over its RunScrub.

Rules are read and written as the registry stores them: an edit reads the stored rules and
writes them back with the revision it read, so two edits at once never lose one another.
"""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.duration_pb2 import Duration

from nimbus.ctl.command import Commands, Ctl, CtlError, add_command, add_noun
from nimbus.ctl.output import Column, human_size
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc as pb_grpc
from registry.lifecycle.values import PolicyError, parse_bytes, parse_duration

SERVICE = "registry"


def _stub(ctl: Ctl) -> Any:
    return pb_grpc.RegistryStub(ctl.channel(SERVICE))


def _duration_text(message: Any, field: str) -> str:
    if not message.HasField(field):
        return "-"
    seconds = getattr(message, field).seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _duration(text: str | None, flag: str) -> Duration | None:
    if text is None:
        return None
    try:
        seconds = parse_duration(text, flag)
    except PolicyError as error:
        raise CtlError(str(error)) from None
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


async def retention_list(ctl: Ctl) -> None:
    stored = await _stub(ctl).GetLifecyclePolicies(
        pb.GetLifecyclePoliciesRequest(), timeout=ctl.timeout
    )
    ctl.out.table(
        list(stored.retention),
        [
            Column("NAME", lambda r: r.name),
            Column("REPOSITORIES", lambda r: r.repositories),
            Column("KEEP LAST", lambda r: r.keep_last if r.HasField("keep_last") else "-"),
            Column("PUSHED WITHIN", lambda r: _duration_text(r, "pushed_within")),
            Column("PULLED WITHIN", lambda r: _duration_text(r, "pulled_within")),
            Column("KEEP TAGS", lambda r: ",".join(r.keep_tags) or "-"),
            Column("UNTAGGED OLDER THAN", lambda r: _duration_text(r, "untagged_older_than")),
            Column("SCHEDULE", lambda r: r.schedule or "-"),
        ],
        empty="no retention rules",
    )


async def _edit(ctl: Ctl, change: Any) -> Any:
    stub = _stub(ctl)
    stored = await stub.GetLifecyclePolicies(pb.GetLifecyclePoliciesRequest(), timeout=ctl.timeout)
    policies = pb.LifecyclePolicies()
    policies.CopyFrom(stored)
    change(policies)
    return await stub.SetLifecyclePolicies(
        pb.SetLifecyclePoliciesRequest(policies=policies, expected_revision=stored.revision),
        timeout=ctl.timeout,
    )


async def retention_add(ctl: Ctl) -> None:
    a = ctl.args
    rule = pb.RetentionRule(
        name=a.name,
        repositories=a.repositories,
        pushed_within=_duration(a.pushed_within, "--pushed-within"),
        pulled_within=_duration(a.pulled_within, "--pulled-within"),
        keep_tags=a.keep_tag or [],
        untagged_older_than=_duration(a.untagged_older_than, "--untagged-older-than"),
        schedule=a.schedule or "",
    )
    if a.keep_last is not None:
        rule.keep_last = a.keep_last

    def add(policies: Any) -> None:
        if any(r.name == a.name for r in policies.retention):
            raise CtlError(f"a retention rule named {a.name!r} exists; remove it first")
        policies.retention.append(rule)

    stored = await _edit(ctl, add)
    ctl.out.done(
        f"added retention rule {a.name} (revision {stored.revision})",
        {"name": a.name, "revision": stored.revision},
    )


async def retention_rm(ctl: Ctl) -> None:
    await _remove(ctl, "retention", "retention")


async def _remove(ctl: Ctl, section: str, noun: str) -> None:
    """Remove the rule of a section named on the command line."""
    name = ctl.args.name

    def remove(policies: Any) -> None:
        rules = getattr(policies, section)
        kept = [r for r in rules if r.name != name]
        if len(kept) == len(rules):
            raise CtlError(f"no {noun} rule named {name!r}")
        del rules[:]
        rules.extend(kept)

    stored = await _edit(ctl, remove)
    ctl.out.done(
        f"removed {noun} rule {name} (revision {stored.revision})",
        {"name": name, "revision": stored.revision},
    )


def _append(section: str, noun: str, rule: Any) -> Any:
    def add(policies: Any) -> None:
        rules = getattr(policies, section)
        if any(r.name == rule.name for r in rules):
            raise CtlError(f"a {noun} rule named {rule.name!r} exists; remove it first")
        rules.append(rule)

    return add


async def _policies(ctl: Ctl) -> Any:
    return await _stub(ctl).GetLifecyclePolicies(
        pb.GetLifecyclePoliciesRequest(), timeout=ctl.timeout
    )


# -- immutable tags -----------------------------------------------------------------------


async def immutable_list(ctl: Ctl) -> None:
    ctl.out.table(
        list((await _policies(ctl)).immutable),
        [Column("NAME", lambda r: r.name), Column("PATTERN", lambda r: r.pattern)],
        empty="no immutable tag rules",
    )


async def immutable_add(ctl: Ctl) -> None:
    a = ctl.args
    # The registry names the rule after its pattern when no name is given.
    rule = pb.ImmutableTagRule(name=a.name or a.pattern, pattern=a.pattern)
    stored = await _edit(ctl, _append("immutable", "immutable tag", rule))
    ctl.out.done(
        f"added immutable tag rule {rule.name} (revision {stored.revision})",
        {"name": rule.name, "revision": stored.revision},
    )


async def immutable_rm(ctl: Ctl) -> None:
    await _remove(ctl, "immutable", "immutable tag")


# -- quotas -------------------------------------------------------------------------------


async def quota_list(ctl: Ctl) -> None:
    ctl.out.table(
        list((await _policies(ctl)).quotas),
        [
            Column("NAME", lambda r: r.name),
            Column("REPOSITORIES", lambda r: r.repositories),
            Column("BYTES", lambda r: human_size(r.bytes) if r.bytes else "no limit"),
            Column("TAGS", lambda r: r.tags or "no limit"),
        ],
        empty="no quota rules",
    )


async def quota_add(ctl: Ctl) -> None:
    a = ctl.args
    try:
        size = parse_bytes(a.bytes, "--bytes") if a.bytes is not None else 0
    except PolicyError as error:
        raise CtlError(str(error)) from None
    rule = pb.QuotaRule(name=a.name, repositories=a.repositories, bytes=size, tags=a.tags or 0)
    stored = await _edit(ctl, _append("quotas", "quota", rule))
    ctl.out.done(
        f"added quota rule {a.name} (revision {stored.revision})",
        {"name": a.name, "revision": stored.revision},
    )


async def quota_rm(ctl: Ctl) -> None:
    await _remove(ctl, "quotas", "quota")


async def _run(ctl: Ctl, dry_run: bool) -> None:
    request = pb.RunRetentionRequest(dry_run=dry_run, rules=ctl.args.rule or [])
    # No deadline: a run over a large store takes as long as it takes.
    async for progress in _stub(ctl).RunRetention(request):
        if progress.HasField("item") and ctl.args.quiet:
            continue
        phase = pb.RetentionProgress.Phase.Name(progress.phase).lower()
        text = f"[{phase}] {progress.message}"
        if progress.HasField("item") and progress.item.size:
            text += f" ({human_size(progress.item.size)})"
        ctl.out.stream_item(progress, text)


async def retention_dry_run(ctl: Ctl) -> None:
    await _run(ctl, dry_run=True)


async def retention_run(ctl: Ctl) -> None:
    await _run(ctl, dry_run=False)


# -- scrub --------------------------------------------------------------------------------


async def _scrub(ctl: Ctl, dry_run: bool) -> None:
    a = ctl.args
    try:
        rate = parse_bytes(a.rate, "--rate") if a.rate is not None else 0
    except PolicyError as error:
        raise CtlError(str(error)) from None
    request = pb.RunScrubRequest(dry_run=dry_run, rate=rate, unlimited=a.unlimited)
    failed = False
    # No deadline: reading every blob back takes as long as the rate says.
    async for progress in _stub(ctl).RunScrub(request):
        if progress.HasField("item"):
            failed = True
        phase = pb.ScrubProgress.Phase.Name(progress.phase).lower()
        if progress.phase == pb.ScrubProgress.DONE:
            s = progress.stats
            text = f"[{phase}] {progress.message}"
            if s.rate:
                text += (
                    f"; read at most {human_size(s.max_tick_bytes)} per {s.tick_seconds:g} s "
                    f"(budget {human_size(s.tick_budget)})"
                )
        else:
            text = f"[{phase}] {progress.message}"
        ctl.out.stream_item(progress, text)
    # A script can tell a clean store from one with findings.
    if failed and not a.no_fail:
        raise CtlError("the scrub found corrupt or missing blobs")


async def scrub_dry_run(ctl: Ctl) -> None:
    await _scrub(ctl, dry_run=True)


async def scrub_run(ctl: Ctl) -> None:
    await _scrub(ctl, dry_run=False)


def _scrub_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", help="bytes per second, e.g. 20MB (the registry's setting)")
    parser.add_argument("--unlimited", action="store_true", help="read as fast as storage can")
    parser.add_argument(
        "--no-fail", action="store_true", help="exit 0 even when something is corrupt or missing"
    )


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rule", action="append", help="only this rule (repeat; all)")
    parser.add_argument("--quiet", action="store_true", help="phases and totals only, no items")


def register(commands: Commands) -> None:
    retention = add_noun(commands, "retention", "retention rules and runs")
    add_command(retention, "list", retention_list, SERVICE, "list the retention rules")
    p = add_command(
        retention,
        "add",
        retention_add,
        SERVICE,
        "add a rule: the tags it keeps are the union of the keeps given",
    )
    p.add_argument("name")
    p.add_argument("--repositories", required=True, help="repository glob (* one component, **)")
    p.add_argument("--keep-last", type=int, help="keep the N most recently pushed tags")
    p.add_argument("--pushed-within", help="keep tags pushed within, e.g. 7d")
    p.add_argument("--pulled-within", help="keep tags pulled within, e.g. 30d")
    p.add_argument("--keep-tag", action="append", help="keep tags matching this glob (repeat)")
    p.add_argument("--untagged-older-than", help="delete untagged manifests older than, e.g. 1d")
    p.add_argument(
        "--schedule", help="apply it by itself: an interval (6h) or cron ('0 3 * * *', UTC)"
    )
    p = add_command(retention, "rm", retention_rm, SERVICE, "remove a retention rule")
    p.add_argument("name")
    p = add_command(
        retention, "dry-run", retention_dry_run, SERVICE, "report what a run would delete"
    )
    _run_arguments(p)
    p = add_command(retention, "run", retention_run, SERVICE, "apply the retention rules now")
    _run_arguments(p)

    immutable = add_noun(commands, "immutable", "immutable tag rules")
    add_command(immutable, "list", immutable_list, SERVICE, "list the immutable tag rules")
    p = add_command(
        immutable,
        "add",
        immutable_add,
        SERVICE,
        "add a rule: matching tags never move to another manifest and cannot be deleted",
    )
    p.add_argument("pattern", help="REPOSITORY-GLOB:TAG-GLOB, e.g. release/*:v*")
    p.add_argument("--name", help="the rule's name (default: the pattern)")
    p = add_command(immutable, "rm", immutable_rm, SERVICE, "remove an immutable tag rule")
    p.add_argument("name")

    scrub = add_noun(commands, "scrub", "integrity scrub: re-hash stored blobs")
    p = add_command(
        scrub, "dry-run", scrub_dry_run, SERVICE, "report corrupt or missing blobs, move nothing"
    )
    _scrub_arguments(p)
    p = add_command(
        scrub, "run", scrub_run, SERVICE, "report corrupt or missing blobs, quarantine the corrupt"
    )
    _scrub_arguments(p)

    quota = add_noun(commands, "quota", "storage quota rules")
    add_command(quota, "list", quota_list, SERVICE, "list the quota rules")
    p = add_command(
        quota, "add", quota_add, SERVICE, "add a rule: limits for each matching repository"
    )
    p.add_argument("name")
    p.add_argument("--repositories", required=True, help="repository glob (* one component, **)")
    p.add_argument("--bytes", help="bytes each repository may hold, e.g. 500MB or 10GiB")
    p.add_argument("--tags", type=int, help="tags each repository may hold")
    p = add_command(quota, "rm", quota_rm, SERVICE, "remove a quota rule")
    p.add_argument("name")
