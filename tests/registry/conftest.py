"""Fixtures of the registry tests: one registry per module, a client, unique repository names."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient

_names = itertools.count(1)


@pytest.fixture(scope="module")
def module_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A registry shared by a module's tests; each test works in its own repositories."""
    reg = RegistryProcess(tmp_path_factory.mktemp("registry") / "data")
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        yield session


@pytest.fixture
def client(http: aiohttp.ClientSession, module_registry: RegistryProcess) -> OCIClient:
    return OCIClient(http, module_registry.url)


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name of this test alone: `t<n>/<test name>`, valid in the spec's grammar."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60].strip("-")
    return f"t{next(_names)}/{slug or 'repo'}"
