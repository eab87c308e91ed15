"""With 10,000 repositories a page of the list is one gRPC call (no call per repository), and
the search is the registry's, not the console's."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.console.conftest import Console, console_config, start_console
from tests.fixtures.images import make_image
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient

COUNT = 10_000


@pytest.fixture(scope="module")
def big_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    reg = RegistryProcess(tmp_path_factory.mktemp("load") / "data", ["--admin-token", "t" * 24])
    yield reg.start()
    reg.stop()


def _seed(data_dir: Path, digest: str) -> None:
    """COUNT - 1 more repositories beside the pushed one: a tag and a revision link each, laid
    out as the registry stores them."""
    algorithm, hex_part = digest.split(":")
    root = next(data_dir.rglob("repositories")).resolve()
    for i in range(1, COUNT):
        repo = root / "load" / f"repo-{i:05d}" / "_manifests"
        revision = repo / "revisions" / algorithm / hex_part
        tag = repo / "tags" / "v1" / "current"
        revision.mkdir(parents=True)
        tag.mkdir(parents=True)
        (revision / "link").write_text(digest)
        (tag / "link").write_text(digest)


@pytest.fixture
async def big_console(big_registry: RegistryProcess) -> AsyncIterator[Console]:
    server, clients = await start_console(
        console_config(big_registry, admin_token="t" * 24, registry_username="")
    )
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Console(str(server.make_url("")).rstrip("/"), clients, http)
    await server.close()


async def test_ten_thousand_repositories_one_call_a_page(
    big_console: Console, big_registry: RegistryProcess
) -> None:
    image = make_image((100,), seed=5)
    async with aiohttp.ClientSession() as http:
        await OCIClient(http, big_registry.url).push_image("load/repo-00000", image, "v1")
    _seed(big_registry.data_dir, image.digest)
    await big_console.sign_in(admin_token="t" * 24)

    big_console.grpc.calls.clear()
    status, page = await big_console.get("/repositories")
    assert status == 200
    assert f'data-testid="total">{COUNT} repositories<' in page
    names = re.findall(r'<td><a href="/repository\?name=([^"]+)">', page)
    assert len(names) == 50 and names[0] == "load%2Frepo-00000"
    assert dict(big_console.grpc.calls) == {"registry.ListRepositories": 1}

    following = re.search(r'rel="next" href="([^"]+)"', page)
    assert following
    big_console.grpc.calls.clear()
    status, page = await big_console.get(following.group(1).replace("&amp;", "&"))
    assert status == 200
    assert re.findall(r'<td><a href="/repository\?name=([^"]+)">', page)[0] == "load%2Frepo-00050"
    assert dict(big_console.grpc.calls) == {"registry.ListRepositories": 1}

    big_console.grpc.calls.clear()
    _, page = await big_console.get("/repositories?q=repo-0999")
    found = re.findall(r'<td><a href="/repository\?name=([^"]+)">', page)
    assert found == [f"load%2Frepo-0999{i}" for i in range(10)]
    assert dict(big_console.grpc.calls) == {"registry.ListRepositories": 1}
