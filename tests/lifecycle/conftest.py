"""Fixtures of the lifecycle tests: registries started with lifecycle rules in their YAML."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from nimbus.grpcclient import open_channel
from proto.nimbus.v1 import registry_pb2_grpc
from tests.fixtures.registry import RegistryFactory, RegistryProcess
from tests.registry.oci_client import OCIClient

TOKEN = "lifecycle-admin-token"
_configs = itertools.count(1)

LifecycleRegistry = Callable[..., RegistryProcess]


@pytest.fixture
def lifecycle_registry(registry_factory: RegistryFactory, tmp_path: Path) -> LifecycleRegistry:
    """A registry whose YAML holds ``lifecycle`` settings (rules under policies)."""

    def make(
        lifecycle: dict[str, Any] | None = None, storage: str = "filesystem", **kwargs: Any
    ) -> RegistryProcess:
        config = tmp_path / f"lifecycle-{next(_configs)}.yaml"
        config.write_text(yaml.safe_dump({"lifecycle": lifecycle or {}}))
        return registry_factory(
            ["--config", str(config), "--admin-token", TOKEN, *kwargs.pop("extra_args", [])],
            storage=storage,
            **kwargs,
        )

    return make


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        yield session


def oci(http: aiohttp.ClientSession, registry: RegistryProcess) -> OCIClient:
    return OCIClient(http, registry.url)


@asynccontextmanager
async def admin(registry: RegistryProcess) -> AsyncIterator[Any]:
    """`nimbus.v1.Registry` of one registry, with the admin token."""
    async with open_channel(registry.grpc_address, TOKEN) as channel:
        yield registry_pb2_grpc.RegistryStub(channel)
