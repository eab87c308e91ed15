"""The gRPC server every service shares: token, health, reflection and TLS, on a live registry."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from nimbus.grpcclient import open_channel
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc
from tests.fixtures.registry import RegistryProcess
from tests.registry_admin.conftest import TOKEN, run_ctl, start_registry

SERVICES = {
    "nimbus.v1.Registry",
    # The pull-through cache's API: served always, FAILED_PRECONDITION without upstreams.
    "nimbus.v1.Cache",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}
REGISTRY_METHODS = {
    "ListRepositories",
    "ListTags",
    "GetManifest",
    "DeleteTag",
    "DeleteManifest",
    "GarbageCollect",
    "GetStats",
    "GetLifecyclePolicies",
    "SetLifecyclePolicies",
    "RunRetention",
    "RunScrub",
}


async def _list_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: set[str] = set()
    async for reply in stub.ServerReflectionInfo(ask()):
        names |= {s.name for s in reply.list_services_response.service}
    return names


async def test_calls_need_the_admin_token(admin_registry: RegistryProcess):
    address = admin_registry.grpc_address
    for token in ("", "wrong-token", TOKEN + "x", TOKEN[:-1]):
        async with open_channel(address, token) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await registry_pb2_grpc.RegistryStub(channel).GetStats(pb.GetStatsRequest())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Streaming calls and reflection are guarded too.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                stream = registry_pb2_grpc.RegistryStub(channel).GarbageCollect(
                    pb.GarbageCollectRequest(dry_run=True)
                )
                async for _ in stream:
                    pass
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _list_services(channel)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Another scheme with the right secret is not a bearer token.
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await registry_pb2_grpc.RegistryStub(channel).GetStats(
                pb.GetStatsRequest(), metadata=(("authorization", f"Basic {TOKEN}"),)
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # The same header set by hand, as grpcurl -H does, is accepted.
        stats = await registry_pb2_grpc.RegistryStub(channel).GetStats(
            pb.GetStatsRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),)
        )
        assert stats.repositories >= 0
    async with open_channel(address, TOKEN) as channel:
        stats = await registry_pb2_grpc.RegistryStub(channel).GetStats(pb.GetStatsRequest())
        assert stats.blobs >= 0


async def test_health_is_serving_without_a_token(admin_registry: RegistryProcess):
    async with open_channel(admin_registry.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "nimbus.v1.Registry"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="nimbus.v1.Nothing"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_and_describes_the_services(admin_registry: RegistryProcess):
    async with open_channel(admin_registry.grpc_address, TOKEN) as channel:
        assert await _list_services(channel) == SERVICES

    def describe() -> tuple[list[str], set[str], str]:
        # grpcio-reflection's descriptor database, as generic clients use it: no generated code.
        credentials = grpc.composite_channel_credentials(
            grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
            grpc.access_token_call_credentials(TOKEN),
        )
        with grpc.secure_channel(admin_registry.grpc_address, credentials) as sync_channel:
            database = ProtoReflectionDescriptorDatabase(sync_channel)
            pool = DescriptorPool(database)
            service = pool.FindServiceByName("nimbus.v1.Registry")
            gc = service.methods_by_name["GarbageCollect"]
            return (
                list(database.get_services()),
                {m.name for m in service.methods},
                f"{gc.server_streaming}:{gc.output_type.full_name}",
            )

    services, methods, gc = await asyncio.to_thread(describe)
    assert set(services) == SERVICES
    assert methods == REGISTRY_METHODS
    assert gc == "True:nimbus.v1.GarbageCollectProgress"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "grpc.crt", directory / "grpc.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=nimbus-test",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_with_token(tmp_path: Path):
    cert, key = await asyncio.to_thread(_self_signed, tmp_path)
    reg = start_registry(
        tmp_path / "data", "--grpc-tls-cert", str(cert), "--grpc-tls-key", str(key)
    )
    try:
        address = reg.grpc_address
        async with open_channel(address, TOKEN, tls_ca=str(cert)) as channel:
            stats = await registry_pb2_grpc.RegistryStub(channel).GetStats(pb.GetStatsRequest())
            assert stats.repositories == 0
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with open_channel(address, "", tls_ca=str(cert)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await registry_pb2_grpc.RegistryStub(channel).GetStats(pb.GetStatsRequest())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Plaintext to a TLS port gets nowhere.
        async with open_channel(address, TOKEN) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await registry_pb2_grpc.RegistryStub(channel).GetStats(
                    pb.GetStatsRequest(), timeout=5
                )
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        # nimbus ctl over TLS, verifying the server with the CA file.
        ctl = await run_ctl(
            *("--registry", address, "--token", TOKEN, "--tls-ca", str(cert), "--json", "stats")
        )
        assert ctl.returncode == 0, ctl.stderr
        assert '"repositories": 0' in ctl.stdout
    finally:
        reg.stop()


async def test_taken_port_is_a_clear_error(admin_registry: RegistryProcess, tmp_path: Path):
    reg = RegistryProcess(tmp_path / "data", ["--grpc-listen", admin_registry.grpc_address])
    with pytest.raises(RuntimeError):
        reg.start()
    assert f"cannot listen for gRPC on {admin_registry.grpc_address}" in reg.log_text()
