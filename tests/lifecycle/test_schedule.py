"""Schedules of retention rules and the scrub: the next run of intervals and cron expressions
computed from given instants (no waiting for the clock), bad expressions refused naming the
rule and field in the YAML, over gRPC and through the ctl, and the loop that runs what is due."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
import grpc
import pytest

from proto.nimbus.v1 import registry_pb2 as pb
from registry.config import ConfigError, LifecycleConfig
from registry.lifecycle.rules import Policies
from registry.lifecycle.schedule import Schedule, due, next_run, parse_schedule, run_on_schedule
from registry.lifecycle.values import PolicyError
from tests.lifecycle.conftest import TOKEN, LifecycleRegistry, admin
from tests.registry_admin.conftest import run_ctl


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        ("0 3 * * *", "2026-12-07 02:59:59", "2026-12-07 03:00:00"),
        ("0 3 * * *", "2026-12-07 03:00:00", "2026-12-08 03:00:00"),
        ("*/15 * * * *", "2026-12-07 10:07:00", "2026-12-07 10:15:00"),
        ("30 4 * * sun", "2026-12-07 00:00:00", "2026-12-13 04:30:00"),  # the 7th is a Monday
        ("0 0 1 * *", "2026-12-07 00:00:00", "2027-01-01 00:00:00"),
        ("0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"),
        ("@daily", "2026-12-07 23:59:00", "2026-12-08 00:00:00"),
        ("@hourly", "2026-12-07 10:00:00", "2026-12-07 11:00:00"),
        # Intervals count from the epoch, so every replica picks the same instants.
        ("6h", "2026-12-07 05:00:00", "2026-12-07 06:00:00"),
        ("6h", "2026-12-07 06:00:00", "2026-12-07 12:00:00"),
        ("90m", "2026-12-07 00:00:01", "2026-12-07 01:30:00"),
        ("3600", "2026-12-07 10:30:00", "2026-12-07 11:00:00"),
    ],
)
def test_next_run(text: str, after: str, expected: str):
    assert _iso(parse_schedule(text, "schedule").next_after(_at(after))) == expected


def test_due_and_next_of_several():
    schedules = {"nightly": parse_schedule("0 3 * * *", "a"), "often": parse_schedule("1h", "b")}
    since, now = _at("2026-12-07 02:30:00"), _at("2026-12-07 03:00:00")
    assert due(schedules, since, now) == ["nightly", "often"]
    assert due(schedules, now, _at("2026-12-07 03:59:59")) == []
    assert due(schedules, now, _at("2026-12-07 04:00:00")) == ["often"]
    assert _iso(next_run(schedules, now) or 0) == "2026-12-07 04:00:00"
    assert next_run({}, now) is None


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("61 * * * *", "the minute field '61' is not valid"),
        ("0 24 * * *", "the hour field '24' is not valid"),
        ("0 0 32 * *", "the day of month field '32' is not valid"),
        ("0 0 * 13 *", "the month field '13' is not valid"),
        ("0 0 * * funday", "the day of week field 'funday' is not valid"),
        ("0 3 * *", "has 4 fields; a cron expression has 5"),
        ("0 3 * * * 2026", "has 6 fields"),
        ("0 0 30 2 *", "never comes"),
        ("@nightly", "is not a cron macro"),
        ("soon", "expected a duration"),
        ("0.5s", "an interval of at least 1s"),
    ],
)
def test_bad_schedule_names_the_rule_and_field(schedule: str, message: str):
    raw = {
        "retention": [
            {"name": "fine", "repositories": "a/*", "keep_last": 1, "schedule": "@daily"},
            {"name": "nightly", "repositories": "b/*", "keep_last": 1, "schedule": schedule},
        ]
    }
    with pytest.raises(PolicyError) as refused:
        Policies.parse(raw)
    text = str(refused.value)
    assert text.startswith("lifecycle.policies.retention[1].schedule: "), text
    assert "'nightly'" in text and message in text, text


def test_scrub_schedule_setting_is_checked():
    LifecycleConfig(scrub_schedule="0 4 * * sun").validate()
    LifecycleConfig(scrub_schedule="1d").validate()
    with pytest.raises(ConfigError, match=r"lifecycle\.scrub_schedule: .*hour field '99'"):
        LifecycleConfig(scrub_schedule="0 99 * * *").validate()
    with pytest.raises(ConfigError, match=r"lifecycle\.scrub_rate"):
        LifecycleConfig(scrub_rate=-1).validate()


async def test_loop_runs_what_is_due_with_a_clock_of_its_own():
    """The loop asks the clock, not the wall: a clock moved by hand drives the runs."""
    now = [_at("2026-12-07 02:59:00")]
    ran: list[list[str]] = []
    turn = asyncio.Event()
    schedules = {
        "nightly": parse_schedule("0 3 * * *", "a"),
        "hourly": parse_schedule("@hourly", "b"),
    }

    async def current() -> dict[str, Schedule]:
        return schedules

    async def run(names: Sequence[str]) -> None:
        ran.append(list(names))
        turn.set()

    task = asyncio.create_task(run_on_schedule(current, run, poll=0.05, clock=lambda: now[0]))
    try:
        await asyncio.sleep(0.2)  # a few turns of the loop while nothing is due
        assert ran == []
        now[0] = _at("2026-12-07 03:00:30")
        await asyncio.wait_for(turn.wait(), 30)
        turn.clear()
        now[0] = _at("2026-12-07 03:30:00")
        await asyncio.sleep(0.2)
        now[0] = _at("2026-12-07 04:00:00")
        await asyncio.wait_for(turn.wait(), 30)
    finally:
        task.cancel()
    assert ran == [["hourly", "nightly"], ["hourly"]]


async def test_schedule_over_grpc_and_ctl(lifecycle_registry: LifecycleRegistry):
    seed = {
        "policies": {
            "retention": [
                {"name": "nightly", "repositories": "ci/*", "keep_last": 3, "schedule": "0 3 * * *"}
            ]
        }
    }
    registry = lifecycle_registry(seed)
    async with admin(registry) as stub:
        stored = await stub.GetLifecyclePolicies(pb.GetLifecyclePoliciesRequest())
        assert [r.schedule for r in stored.retention] == ["0 3 * * *"]
        policies = pb.LifecyclePolicies()
        policies.CopyFrom(stored)
        policies.retention[0].schedule = "0 3 * * * *"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SetLifecyclePolicies(pb.SetLifecyclePoliciesRequest(policies=policies))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "retention[0].schedule" in (refused.value.details() or "")
        assert "'nightly'" in (refused.value.details() or "")

    def ctl(*args: str):
        return run_ctl("--registry", registry.grpc_address, "--token", TOKEN, *args)

    listed = await ctl("retention", "list")
    assert "SCHEDULE" in listed.stdout and "0 3 * * *" in listed.stdout
    bad = await ctl(
        "retention",
        "add",
        "weekly",
        "--repositories",
        "x/*",
        "--keep-last",
        "1",
        "--schedule",
        "0 3 * * someday",
    )
    assert bad.returncode != 0
    assert "retention[1].schedule" in bad.stderr and "day of week" in bad.stderr, bad.stderr
    good = await ctl(
        "retention",
        "add",
        "weekly",
        "--repositories",
        "x/*",
        "--keep-last",
        "1",
        "--schedule",
        "30 4 * * sun",
    )
    assert good.returncode == 0, good.stderr
    assert "30 4 * * sun" in (await ctl("retention", "list")).stdout


async def test_a_scheduled_rule_runs_by_itself(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession
):
    """An interval of 1 s: the registry applies the rule without being asked."""
    from tests.fixtures.images import make_image
    from tests.lifecycle.conftest import oci

    registry = lifecycle_registry({"reload_interval": 0})
    client = oci(http, registry)
    for i in range(3):
        await client.push_image("sched/app", make_image((200,), seed=900 + i), f"t{i}")
    rule = pb.RetentionRule(name="soon", repositories="sched/*", keep_tags=["t0"], schedule="1s")
    async with admin(registry) as stub:
        await stub.SetLifecyclePolicies(
            pb.SetLifecyclePoliciesRequest(policies=pb.LifecyclePolicies(retention=[rule]))
        )
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        tags = (await client.request("GET", "/v2/sched/app/tags/list")).json()["tags"]
        if tags == ["t0"]:
            break
        assert asyncio.get_running_loop().time() < deadline, tags
        await asyncio.sleep(0.2)
