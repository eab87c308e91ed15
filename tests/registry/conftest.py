"""Fixtures of the registry tests: one registry per module and storage driver, a client,
unique repository names.

Every test of this package runs on both storage drivers (`storage` is "filesystem" or "s3",
one registry of each per module, the S3 one on a fresh bucket of the local S3 server). A test
about one driver's own behaviour carries `@pytest.mark.filesystem_only(reason)`: its S3 run is
reported as skipped with that reason.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.fixtures.registry import RegistryFactory, RegistryProcess
from tests.registry.oci_client import OCIClient
from tests.registry.store import Store

STORAGES = ("filesystem", "s3")

_names = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "filesystem_only(reason): a test about the filesystem driver alone"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "storage" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("filesystem_only")
    params = [
        pytest.param(s, marks=pytest.mark.skip(reason=only.args[0]))
        if only and s != STORAGES[0]
        else s
        for s in STORAGES
    ]
    # Module scope: the tests of a module share one registry per driver.
    metafunc.parametrize("storage", params, indirect=True, scope="module")


@pytest.fixture(scope="module")
def storage(request: pytest.FixtureRequest) -> str:
    """The storage driver of this run of the test."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def module_registry(
    storage: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RegistryProcess]:
    """A registry shared by a module's tests; each test works in its own repositories."""
    data_dir = tmp_path_factory.mktemp(f"registry-{storage}") / "data"
    if storage == "s3":
        reg = request.getfixturevalue("s3_server").registry(data_dir)
    else:
        reg = RegistryProcess(data_dir)
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture
def registry(registry_factory: RegistryFactory, storage: str) -> RegistryProcess:
    """A registry of this test alone, on this run's storage driver."""
    return registry_factory(storage=storage)


def store_of(reg: RegistryProcess, request: pytest.FixtureRequest) -> Store:
    return Store(reg, request.getfixturevalue("s3_server") if reg.storage == "s3" else None)


@pytest.fixture
def store(module_registry: RegistryProcess, request: pytest.FixtureRequest) -> Store:
    """What the module's registry stored."""
    return store_of(module_registry, request)


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
