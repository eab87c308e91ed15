"""Fixtures of the console tests: a registry with users, access rules and an admin token (a
real process), and the console serving on loopback in this test's event loop, so a test can
count the gRPC calls a page made."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from console.app import build_app
from console.clients import GrpcClients
from console.config import ConsoleConfig
from console.state import GRPC
from tests.fixtures.registry import RegistryProcess, free_port
from tests.fixtures.users import write_htpasswd

ADMIN_TOKEN = "console-admin-token-0123456789"
USERS = {"ann": "ann-Pa55word!", "pusher": "push-Pa55word!"}
ACCESS = [
    {"repositories": ["team/**"], "users": ["ann"], "actions": ["pull"]},
    {"repositories": ["**"], "users": ["pusher"], "actions": ["*"]},
]


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()


@pytest.fixture(scope="module")
def console_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    directory = tmp_path_factory.mktemp("console")
    htpasswd = write_htpasswd(directory / "htpasswd", USERS)
    config = directory / "registry.yaml"
    config.write_text(yaml.safe_dump({"auth": {"htpasswd": str(htpasswd), "access": ACCESS}}))
    reg = RegistryProcess(
        directory / "data", ["--admin-token", ADMIN_TOKEN, "--config", str(config)]
    )
    yield reg.start()
    reg.stop()


def console_config(registry: RegistryProcess, **extra: Any) -> ConsoleConfig:
    values: dict[str, Any] = {
        "registry_url": registry.url,
        "registry_grpc": registry.grpc_address,
        # Nothing listens there: the browsing pages must not need the notifier.
        "notifier_grpc": f"127.0.0.1:{free_port()}",
        "replicator_grpc": "",
        "admin_token": ADMIN_TOKEN,
        "registry_username": "pusher",
        "registry_password": USERS["pusher"],
        "secret": "a-test-secret-of-some-length",
        **extra,
    }
    return ConsoleConfig(**values)


@dataclass
class Console:
    url: str
    grpc: GrpcClients
    http: aiohttp.ClientSession

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.http.get(self.url + path, **kwargs) as response:
            return response.status, await response.text()

    async def csrf(self, path: str = "/signin") -> str:
        _, page = await self.get(path)
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert found, page[:500]
        return found.group(1)

    async def post(self, path: str, data: dict[str, Any], **kwargs: Any) -> tuple[int, str]:
        async with self.http.post(self.url + path, data=data, **kwargs) as response:
            return response.status, await response.text()

    async def sign_in(self, **form: str) -> None:
        token = await self.csrf()
        status, page = await self.post("/signin", {"csrf_token": token, "next": "/", **form})
        assert status == 200 and "Sign out" in page, page[:800]


async def start_console(config: ConsoleConfig) -> tuple[TestServer, GrpcClients]:
    app = build_app(config)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, app[GRPC]


@pytest.fixture
async def console(console_registry: RegistryProcess) -> AsyncIterator[Console]:
    server, clients = await start_console(console_config(console_registry))
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        yield Console(str(server.make_url("")).rstrip("/"), clients, http)
    await server.close()
