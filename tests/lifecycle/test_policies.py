"""Lifecycle rules as configuration: validated with the rule and field named (YAML and gRPC),
stored once so replicas on one store agree, the YAML only seeding them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest
import yaml

from proto.nimbus.v1 import registry_pb2 as pb
from tests.fixtures.images import make_image
from tests.fixtures.registry import free_port
from tests.lifecycle.conftest import LifecycleRegistry, admin, oci


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        ({"immutable": [{"pattern": "release/[a:v*"}]}, "lifecycle.policies.immutable[0].pattern"),
        (
            {
                "retention": [
                    {"repositories": "ci/**", "keep_last": 3},
                    {"repositories": "x", "keep_last": -1},
                ]
            },
            "lifecycle.policies.retention[1].keep_last: must not be negative",
        ),
        (
            {"quotas": [{"repositories": "team/*", "bytes": "1GiB", "max_tags": 4}]},
            "lifecycle.policies.quotas[0].max_tags: unknown setting",
        ),
        (
            {"retention": [{"repositories": "ci/*", "pushed_within": "-3d"}]},
            "lifecycle.policies.retention[0].pushed_within: must not be negative",
        ),
    ],
)
def test_bad_rules_in_the_yaml_stop_the_start(tmp_path: Path, policies, expected: str):
    config = tmp_path / "registry.yaml"
    config.write_text(yaml.safe_dump({"lifecycle": {"policies": policies}}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nimbus.cli",
            "registry",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--grpc-listen",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


async def test_bad_rules_over_grpc_are_refused(lifecycle_registry: LifecycleRegistry):
    registry = lifecycle_registry()
    async with admin(registry) as stub:
        bad = pb.LifecyclePolicies(
            retention=[
                pb.RetentionRule(repositories="ci/*", keep_last=2),
                pb.RetentionRule(repositories="ci/**", keep_last=-5),
            ]
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SetLifecyclePolicies(pb.SetLifecyclePoliciesRequest(policies=bad))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "policies.retention[1].keep_last" in refused.value.details()
        glob = pb.LifecyclePolicies(quotas=[pb.QuotaRule(repositories="Team A", bytes=10)])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SetLifecyclePolicies(pb.SetLifecyclePoliciesRequest(policies=glob))
        assert "policies.quotas[0].repositories" in refused.value.details()
        stored = await stub.GetLifecyclePolicies(pb.GetLifecyclePoliciesRequest())
        assert stored.revision == 0 and not stored.retention and not stored.quotas

        # An edit based on an old revision is refused, not lost silently.
        good = pb.LifecyclePolicies(immutable=[pb.ImmutableTagRule(pattern="a/*:v*")])
        first = await stub.SetLifecyclePolicies(pb.SetLifecyclePoliciesRequest(policies=good))
        assert first.revision == 1 and first.source == "admin"
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await stub.SetLifecyclePolicies(
                pb.SetLifecyclePoliciesRequest(policies=pb.LifecyclePolicies(), expected_revision=7)
            )
        assert stale.value.code() == grpc.StatusCode.ABORTED


async def test_replicas_share_the_stored_rules_and_the_yaml_only_seeds(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession
):
    seed = {
        "reload_interval": 0.2,
        "policies": {"immutable": [{"name": "seeded", "pattern": "app:v*"}]},
    }
    one = lifecycle_registry(seed, storage="s3")
    # The second replica's YAML says otherwise: the stored rules (seeded by the first) win.
    other = {"reload_interval": 0.2, "policies": {"immutable": [{"pattern": "other:*"}]}}
    two = lifecycle_registry(other, storage="s3", s3_bucket=one.s3_bucket)
    image, moved = make_image(seed=5), make_image(seed=6)
    await oci(http, one).push_image("app", image, "v1")
    await oci(http, one).push_blobs("app", moved.blobs)
    (await oci(http, two).put_manifest("app", "v1", moved.manifest)).expect_error(403, "DENIED")
    async with admin(two) as stub:
        stored = await stub.GetLifecyclePolicies(pb.GetLifecyclePoliciesRequest())
        assert [r.name for r in stored.immutable] == ["seeded"]
        assert stored.source == "config"
        # An edit through one replica is what the other applies once it re-reads.
        await stub.SetLifecyclePolicies(
            pb.SetLifecyclePoliciesRequest(
                policies=pb.LifecyclePolicies(immutable=[pb.ImmutableTagRule(pattern="app:x*")])
            )
        )
    await asyncio.sleep(0.5)
    assert (await oci(http, one).put_manifest("app", "v1", moved.manifest)).status == 201
    # A restart with the original YAML keeps the edited rules.
    one.restart()
    async with admin(one) as stub:
        stored = await stub.GetLifecyclePolicies(pb.GetLifecyclePoliciesRequest())
        assert [r.pattern for r in stored.immutable] == ["app:x*"]
        assert stored.source == "admin" and stored.revision == 2
