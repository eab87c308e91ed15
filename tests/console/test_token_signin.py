"""Sign-in against a registry that uses Docker token authentication: the console checks the
password through the registry's token flow and reads the OCI API with the user's own token, so
the registry's access rules still decide what each user sees."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import yaml

from nimbus.oci.client import RegistryClient
from nimbus.oci.transport import Credentials
from tests.console.conftest import (
    ACCESS,
    ADMIN_TOKEN,
    USERS,
    Console,
    console_config,
    start_console,
)
from tests.console.images import described_image
from tests.fixtures.registry import RegistryProcess
from tests.fixtures.users import write_htpasswd


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    directory = tmp_path_factory.mktemp("console-token")
    htpasswd = write_htpasswd(directory / "htpasswd", USERS)
    config = directory / "registry.yaml"
    config.write_text(yaml.safe_dump({"auth": {"htpasswd": str(htpasswd), "access": ACCESS}}))
    registry = RegistryProcess(
        directory / "data",
        ["--admin-token", ADMIN_TOKEN, "--config", str(config), "--auth-token"],
    )
    yield registry.start()
    registry.stop()


@pytest.fixture
async def token_console(token_registry: RegistryProcess) -> AsyncIterator[Console]:
    server, clients = await start_console(console_config(token_registry))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Console(str(server.make_url("")).rstrip("/"), clients, http)
    await server.close()


async def push_as(registry: RegistryProcess, user: str, repository: str, seed: int) -> None:
    """Through the token flow, as docker would."""
    image = described_image(seed)
    async with RegistryClient(registry.url, Credentials(user, USERS[user])) as client:
        for blob in image.blobs:
            await client.push_blob(repository, blob.data)
        manifest = image.manifest
        await client.put_manifest(repository, "v1", manifest.data, manifest.media_type)


async def test_sign_in_through_the_token_flow(
    token_console: Console, token_registry: RegistryProcess
) -> None:
    await push_as(token_registry, "pusher", "team/tokened", 41)
    await push_as(token_registry, "pusher", "secret/tokened", 42)

    console = token_console
    token = await console.csrf()
    status, page = await console.post(
        "/signin", {"csrf_token": token, "username": "ann", "password": "wrong"}
    )
    assert status == 401 and "invalid username or password" in page

    await console.sign_in(username="ann", password=USERS["ann"])
    _, page = await console.get("/repositories")
    assert "team/tokened" in page and "secret/tokened" not in page
    # The config is read over the OCI API with ann's own token.
    status, page = await console.get("/manifest?repository=team/tokened&reference=v1")
    assert status == 200 and "SEED=41" in page
    status, _ = await console.get("/manifest?repository=secret/tokened&reference=v1")
    assert status == 404
