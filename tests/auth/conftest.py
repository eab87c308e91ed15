"""Fixtures of the auth tests: users in a bcrypt htpasswd file, access rules, registries.

The rules every registry here runs with:
    alice     everything in alice/**, pull in team/*, pull and push in public/**
    bob       (group devs) pull and push in team/*
    carol     a valid login and no rule: may authenticate, may do nothing
    anonymous pull in public/**
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from nimbus.oci.client import RegistryClient
from nimbus.oci.transport import Credentials
from tests.fixtures.images import Image, OCILayout, make_image, write_oci_layout
from tests.fixtures.registry import RegistryProcess
from tests.fixtures.users import write_htpasswd
from tests.registry.oci_client import OCIClient

USERS = {"alice": "alice-Pa55word!", "bob": "bob-Pa55word!", "carol": "carol-Pa55word!"}
GROUPS = {"devs": ["bob"]}
ACCESS: list[dict[str, Any]] = [
    {"repositories": ["alice/**"], "users": ["alice"], "actions": ["*"]},
    {"repositories": ["team/*"], "users": ["alice"], "actions": ["pull"]},
    {"repositories": ["team/*"], "groups": ["devs"], "actions": ["pull", "push"]},
    {"repositories": ["public/**"], "users": ["alice"], "actions": ["pull", "push"]},
    {"repositories": ["public/**"], "anonymous": True, "actions": ["pull"]},
]


# The raw client at a registry, sending this Authorization value (or none).
RawClient = Callable[..., OCIClient]


def client_of(registry: RegistryProcess, user: str | None = None) -> RegistryClient:
    """The shared OCI client at ``registry``, logged in as ``user`` (anonymous when None)."""
    credentials = Credentials(user, USERS[user]) if user is not None else None
    return RegistryClient(registry.url, credentials)


async def push_image(
    registry: RegistryProcess, user: str, repository: str, tag: str, image: Image
) -> None:
    """Push ``image`` as ``user`` would, through whichever auth flow the registry asks for."""
    async with client_of(registry, user) as client:
        for blob in image.blobs:
            assert await client.push_blob(repository, blob.data) == blob.digest
        manifest = image.manifest
        pushed = await client.put_manifest(repository, tag, manifest.data, manifest.media_type)
        assert pushed.digest == image.digest


def write_config(directory: Path, **auth: Any) -> Path:
    """A registry configuration file with the users and rules above, and ``auth`` on top."""
    htpasswd = write_htpasswd(directory / "htpasswd", USERS)
    # Tests fail logins on purpose; only the rate-limit test wants the limit near.
    section = {
        "htpasswd": str(htpasswd),
        "groups": GROUPS,
        "access": ACCESS,
        "login_attempts": 1000,
        **auth,
    }
    path = directory / "registry.yaml"
    path.write_text(yaml.safe_dump({"auth": section}))
    return path


def start_registry(
    tmp_path_factory: pytest.TempPathFactory, *args: str, **auth: Any
) -> RegistryProcess:
    directory = tmp_path_factory.mktemp("auth")
    config = write_config(directory, **auth)
    return RegistryProcess(directory / "data", ["--config", str(config), *args]).start()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    registry = start_registry(tmp_path_factory)
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    registry = start_registry(tmp_path_factory, "--auth-token")
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> OCILayout:
    """One small image, tag v1, for skopeo to push."""
    path = tmp_path_factory.mktemp("layout") / "src"
    return write_oci_layout(path, {"v1": make_image((4096, 8192), seed=61)})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The raw client's session: a connection per request, so each reaches the server afresh
    (a restarted registry included)."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=60),
        auto_decompress=False,
    ) as session:
        yield session


@pytest.fixture
def raw(http: aiohttp.ClientSession) -> RawClient:
    """`raw(registry, authorization=None)`: the raw client at that registry."""

    def at(registry: RegistryProcess, authorization: str | None = None) -> OCIClient:
        return OCIClient(http, registry.url, authorization)

    return at
