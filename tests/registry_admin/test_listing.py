"""ListRepositories: search, orders, sizes and last push, and `pullable_by` by the access rules."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import yaml

from nimbus.grpcclient import open_channel
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc
from tests.fixtures.images import make_image
from tests.fixtures.registry import RegistryProcess
from tests.fixtures.users import write_htpasswd
from tests.registry.oci_client import OCIClient
from tests.registry_admin.conftest import TOKEN

USERS = {"ann": "ann-Pa55word!"}
ACCESS = [
    {"repositories": ["team/**"], "users": ["ann"], "actions": ["pull"]},
    {"repositories": ["public/*"], "anonymous": True, "actions": ["pull"]},
]


@pytest.fixture(scope="module")
def ruled_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    directory = tmp_path_factory.mktemp("listing")
    htpasswd = write_htpasswd(directory / "htpasswd", USERS | {"pusher": "push-Pa55word!"})
    rules = [*ACCESS, {"repositories": ["**"], "users": ["pusher"], "actions": ["*"]}]
    config = directory / "registry.yaml"
    config.write_text(yaml.safe_dump({"auth": {"htpasswd": str(htpasswd), "access": rules}}))
    reg = RegistryProcess(directory / "data", ["--admin-token", TOKEN, "--config", str(config)])
    yield reg.start()
    reg.stop()


async def _names(stub, **fields) -> list[str]:
    reply = await stub.ListRepositories(pb.ListRepositoriesRequest(**fields))
    return [r.name for r in reply.repositories]


async def test_search_orders_sizes_and_access(ruled_registry: RegistryProcess, http) -> None:
    client = OCIClient(http, ruled_registry.url).authorized(_basic("pusher", "push-Pa55word!"))
    small = make_image((1000,), seed=301)
    big = make_image((50_000, 20_000), seed=302)
    await client.push_image("team/small", small, "v1")
    await client.push_image("team/big", big, "v1")
    await client.push_image("team/big", make_image((10,), seed=303), "v2")
    await client.push_image("public/web", small, "latest")
    await client.push_image("private/x", small, "latest")

    async with open_channel(ruled_registry.grpc_address, TOKEN) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        every = await stub.ListRepositories(pb.ListRepositoriesRequest())
        assert [r.name for r in every.repositories] == [
            "private/x", "public/web", "team/big", "team/small",
        ]  # fmt: skip
        assert every.total == 4
        by_name = {r.name: r for r in every.repositories}
        expected_small = small.manifest.size + small.config.size + sum(x.size for x in small.layers)
        assert by_name["team/small"].size == expected_small
        assert by_name["team/big"].size > 70_000
        assert by_name["team/big"].tag_count == 2
        assert by_name["team/small"].last_pushed.seconds > 0

        assert await _names(stub, query="TEAM/") == ["team/big", "team/small"]
        assert await _names(stub, order_by="-name") == [
            "team/small", "team/big", "public/web", "private/x",
        ]  # fmt: skip
        assert (await _names(stub, order_by="-size"))[0] == "team/big"
        assert (await _names(stub, order_by="-last_pushed"))[0] == "private/x"
        assert (await _names(stub, order_by="-tags"))[0] == "team/big"

        # Pages: by name the token is the last name; other orders an offset.
        first = await stub.ListRepositories(pb.ListRepositoriesRequest(page_size=3))
        assert first.next_page_token == "team/big"
        rest = await _names(stub, page_size=3, page_token=first.next_page_token)
        assert rest == ["team/small"]
        sized = await stub.ListRepositories(
            pb.ListRepositoriesRequest(page_size=3, order_by="size")
        )
        tail = await _names(stub, page_size=3, order_by="size", page_token=sized.next_page_token)
        assert len(tail) == 1 and tail[0] not in [r.name for r in sized.repositories]

        # The access rules: ann pulls team/**, everyone public/*.
        assert await _names(stub, pullable_by="ann") == ["public/web", "team/big", "team/small"]
        assert await _names(stub, pullable_by="") == ["public/web"]
        assert await _names(stub, pullable_by="nobody", query="team") == []
        gated = await stub.ListRepositories(pb.ListRepositoriesRequest(pullable_by=""))
        assert gated.total == 1
        tags = await stub.ListTags(pb.ListTagsRequest(repository="team/big", pullable_by="ann"))
        assert [t.name for t in tags.tags] == ["v1", "v2"]
        for call in (
            stub.ListTags(pb.ListTagsRequest(repository="private/x", pullable_by="ann")),
            stub.GetManifest(
                pb.GetManifestRequest(repository="private/x", reference="latest", pullable_by="")
            ),
        ):
            with pytest.raises(Exception) as caught:
                await call
            assert caught.value.code().name == "NOT_FOUND"  # type: ignore[attr-defined]
        with pytest.raises(Exception) as bad:
            await stub.ListRepositories(pb.ListRepositoriesRequest(order_by="colour"))
        assert bad.value.code().name == "INVALID_ARGUMENT"  # type: ignore[attr-defined]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
