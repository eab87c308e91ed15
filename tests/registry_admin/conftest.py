"""Fixtures of the admin API tests: a registry with an admin token, gRPC stubs, an OCI client."""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nimbus.grpcclient import open_channel
from proto.nimbus.v1 import registry_pb2_grpc
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient

TOKEN = "s3cret-admin-token"
_names = itertools.count(1)


@dataclass
class CtlResult:
    returncode: int
    stdout: str
    stderr: str


async def run_ctl(*args: str, env: dict[str, str] | None = None) -> CtlResult:
    """`nimbus ctl ARGS` as a user runs it: a separate process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nimbus.cli",
        "ctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return CtlResult(proc.returncode, out.decode(), err.decode())


def start_registry(data_dir: Path, *extra: str) -> RegistryProcess:
    return RegistryProcess(data_dir, ["--admin-token", TOKEN, *extra]).start()


@pytest.fixture(scope="module")
def admin_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A registry shared by a module's tests; each test works in its own repositories."""
    reg = start_registry(tmp_path_factory.mktemp("admin") / "data")
    yield reg
    reg.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        yield session


@pytest.fixture
def client(http: aiohttp.ClientSession, admin_registry: RegistryProcess) -> OCIClient:
    return OCIClient(http, admin_registry.url)


@pytest.fixture
async def admin(admin_registry: RegistryProcess) -> AsyncIterator[Any]:
    """A `nimbus.v1.Registry` stub carrying the admin token."""
    async with open_channel(admin_registry.grpc_address, TOKEN) as channel:
        yield registry_pb2_grpc.RegistryStub(channel)


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name of this test alone."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:50].strip("-")
    return f"a{next(_names)}/{slug or 'repo'}"
