"""How the admin API's failures reach a caller: the domain's errors as their gRPC status and
message, unary and streaming calls alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from nimbus.grpcclient import open_channel
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc
from tests.fixtures.images import make_image
from tests.registry.oci_client import OCIClient
from tests.registry_admin.conftest import TOKEN, start_registry

REPO = "team/app"


@dataclass
class Damaged:
    """A registry of this test alone holding `team/app:v1`, and its tag link to spoil."""

    admin: Any
    log_text: Any
    link: Path


@pytest.fixture
async def damaged(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[Damaged]:
    reg = start_registry(tmp_path / "data")
    try:
        await OCIClient(http, reg.url).push_image(REPO, make_image((100,), seed=41), "v1")
        link = reg.data_dir / "repositories" / REPO / "_manifests/tags/v1/current/link"
        async with open_channel(reg.grpc_address, TOKEN) as channel:
            yield Damaged(registry_pb2_grpc.RegistryStub(channel), reg.log_text, link)
    finally:
        reg.stop()


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value


async def stream_refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for _ in call:
            pass
    return failed.value


async def test_an_oci_error_keeps_its_kind_and_message(admin: Any, repo: str) -> None:
    unknown = await refusal(admin.ListTags(pb.ListTagsRequest(repository=repo)))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert unknown.details() == f"repository name not known to registry (name={repo})"
    negative = await refusal(admin.ListRepositories(pb.ListRepositoriesRequest(page_size=-1)))
    assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert negative.details() == "page_size must not be negative"


async def test_any_other_failure_is_internal_and_logged_not_shown(damaged: Damaged) -> None:
    # A damaged store, not a bad request: a tag link of bytes that are not even text.
    damaged.link.write_bytes(b"\xff\xfe")
    failed = await refusal(damaged.admin.ListTags(pb.ListTagsRequest(repository=REPO)))
    assert failed.code() == grpc.StatusCode.INTERNAL
    assert failed.details() == "internal error (UnicodeDecodeError)"
    log = damaged.log_text()
    assert '"method": "ListTags"' in log and "UnicodeDecodeError" in log


async def test_a_streaming_call_maps_its_errors_too(admin: Any) -> None:
    request = pb.GarbageCollectRequest(dry_run=True, grace_period=Duration(seconds=-1))
    refused = await stream_refusal(admin.GarbageCollect(request))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "grace_period must not be negative"


async def test_a_collection_that_finds_damage_is_aborted_and_says_where(damaged: Damaged) -> None:
    damaged.link.write_text("not a digest")
    request = pb.GarbageCollectRequest(dry_run=True)
    refused = await stream_refusal(damaged.admin.GarbageCollect(request))
    assert refused.code() == grpc.StatusCode.ABORTED
    assert f"tag {REPO}:v1 does not link to a digest" in refused.details()
