"""The registry's maintenance metrics: a garbage collection, dry and real, is counted as it ends,
with the bytes it freed."""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration

from nimbus.oci.client import RegistryClient
from proto.nimbus.v1 import registry_pb2, registry_pb2_grpc
from tests.fixtures.images import make_blob
from tests.fixtures.registry import RegistryFactory
from tests.metrics.conftest import scrape


async def _collect(address: str, dry_run: bool) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        request = registry_pb2.GarbageCollectRequest(
            dry_run=dry_run, grace_period=Duration(seconds=0)
        )
        phases = [progress.phase async for progress in stub.GarbageCollect(request)]
        assert phases[-1] == registry_pb2.GarbageCollectProgress.DONE


async def test_gc_runs_and_bytes_freed(registry_factory: RegistryFactory) -> None:
    registry = registry_factory()
    url = f"{registry.url}/metrics"
    orphan = make_blob(4321, seed=5)
    async with RegistryClient(registry.url) as client:
        await client.push_blob("app/orphan", orphan.data)
    before = await scrape(url)
    assert before.value("nimbus_maintenance_runs_total", job="gc", outcome="completed") == 0

    await _collect(registry.grpc_address, dry_run=True)
    dry = await scrape(url)
    assert dry.value("nimbus_maintenance_runs_total", job="gc", outcome="dry_run") == 1
    assert dry.value("nimbus_maintenance_runs_total", job="gc", outcome="completed") == 0
    assert dry.value("nimbus_gc_bytes_freed_total") == 0

    await _collect(registry.grpc_address, dry_run=False)
    real = await scrape(url)
    assert real.value("nimbus_maintenance_runs_total", job="gc", outcome="completed") == 1
    assert real.value("nimbus_maintenance_run_duration_seconds_count", job="gc") == 2
    # The blob no manifest references: its bytes, exactly.
    assert real.value("nimbus_gc_bytes_freed_total") == orphan.size
