"""Garbage collection fails closed, on the filesystem and on S3: what it cannot read stops it.

Content is pushed to a live registry, then corrupted in its store through a storage driver. A
collection that meets the damage stops with ABORTED before removing anything that the damaged
link or index could reach, and says exactly what it removed. Once the damage is repaired the same
collection removes what it should, so each test also proves there was something to lose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from nimbus.grpcclient import open_channel
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc
from registry.app import storage_driver
from registry.config import RegistryConfig, StorageConfig
from registry.reference import Digest
from registry.services import Services
from registry.services.gc import CollectionAborted, GarbageCollector, GcItem, ItemKind
from registry.storage import paths, walk
from registry.storage.driver import FileInfo, FileWriter, StorageDriver
from tests.fixtures.images import make_blob, make_image, make_multiplatform
from tests.fixtures.registry import RegistryFactory, RegistryProcess
from tests.registry.oci_client import OCIClient
from tests.registry_admin.conftest import TOKEN

Phase = pb.GarbageCollectProgress.Phase
Kind = pb.GarbageCollectItem.Kind
# Everything pushed before a collection starts is old enough to go: only references keep it.
NO_GRACE = Duration(seconds=0)


@dataclass
class Site:
    """A registry and a driver of its store, to damage what it holds behind its back."""

    registry: RegistryProcess
    store: StorageDriver


@pytest.fixture(params=["filesystem", "s3"])
async def site(
    request: pytest.FixtureRequest, registry_factory: RegistryFactory
) -> AsyncIterator[Site]:
    reg = registry_factory(storage=request.param, extra_args=["--admin-token", TOKEN])
    config = RegistryConfig(data_dir=str(reg.data_dir))
    if request.param == "s3":
        assert reg.s3_bucket is not None
        s3 = request.getfixturevalue("s3_server").config(reg.s3_bucket)
        config = RegistryConfig(data_dir=str(reg.data_dir), storage=StorageConfig("s3", s3))
    store = storage_driver(config)
    await store.open()
    yield Site(reg, store)
    await store.close()


@pytest.fixture
async def client() -> AsyncIterator[Callable[[RegistryProcess], OCIClient]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield lambda reg: OCIClient(session, reg.url)


@dataclass
class Outcome:
    messages: list[Any]
    error: grpc.aio.AioRpcError | None

    @property
    def removed(self) -> set[tuple[int, str, str]]:
        """Every item the stream reported removed: kind, repository, digest."""
        items = [m.item for m in self.messages if m.HasField("item")]
        return {(i.kind, i.repository, i.digest) for i in items}


async def collect(reg: RegistryProcess, **request: Any) -> Outcome:
    messages: list[Any] = []
    async with open_channel(reg.grpc_address, TOKEN) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        try:
            async for message in stub.GarbageCollect(pb.GarbageCollectRequest(**request)):
                messages.append(message)
        except grpc.aio.AioRpcError as error:
            return Outcome(messages, error)
    return Outcome(messages, None)


def manifest_item(name: str, digest: str) -> tuple[int, str, str]:
    return (Kind.MANIFEST, name, digest)


def blob_item(digest: str) -> tuple[int, str, str]:
    return (Kind.BLOB, "", digest)


async def stored(store: StorageDriver) -> dict[str, set[str]]:
    """What the store holds: blobs, and each repository's manifests and tags."""
    found: dict[str, set[str]] = {"blobs": {str(d) async for d in walk.blobs(store)}}
    found["blobs"] = {
        d for d in found["blobs"] if await store.stat(paths.blob_data(Digest.parse(d)))
    }
    for name in await walk.repositories(store):
        found[f"{name} manifests"] = {str(d) for d in await walk.revisions(store, name)}
        found[f"{name} tags"] = set(await walk.tags(store, name))
    return found


async def test_a_tag_link_naming_no_digest_stops_the_collection(
    site: Site, client: Callable[[RegistryProcess], OCIClient]
) -> None:
    oci = client(site.registry)
    tagged = make_image((700, 500), seed=31)
    await oci.push_image("app", tagged, "v1")
    untagged = make_image((400,), seed=32)
    await oci.push_image("app", untagged)
    orphan = make_blob(900, seed=33)
    await oci.push_blob("app", orphan.data)
    link = paths.tag_link("app", "v1")
    good_link = await site.store.get_content(link)
    await site.store.put_content(link, b"not a digest\n")
    before = await stored(site.store)

    outcome = await collect(site.registry, delete_untagged=True, grace_period=NO_GRACE)
    assert outcome.error is not None, "the collection went on past an unreadable tag"
    assert outcome.error.code() == grpc.StatusCode.ABORTED
    assert "tag app:v1 does not link to a digest" in outcome.error.details()
    assert outcome.error.details().endswith("nothing was removed")
    assert outcome.removed == set()
    assert [m.phase for m in outcome.messages] == [Phase.MARK] * len(outcome.messages)
    assert await stored(site.store) == before

    await site.store.put_content(link, good_link)
    repaired = await collect(site.registry, delete_untagged=True, grace_period=NO_GRACE)
    assert repaired.error is None and repaired.messages[-1].phase == Phase.DONE
    gone = {untagged.digest, *(b.digest for b in untagged.blobs), orphan.digest}
    assert repaired.removed == {
        manifest_item("app", untagged.digest),
        *(blob_item(d) for d in gone),
    }
    after = await stored(site.store)
    assert after["blobs"] == before["blobs"] - gone
    assert after["app manifests"] == {tagged.digest}


async def test_an_index_that_is_not_json_stops_the_collection(
    site: Site, client: Callable[[RegistryProcess], OCIClient]
) -> None:
    oci = client(site.registry)
    # The index's children carry no tag: only the index keeps them.
    index = make_multiplatform((600, 300), seed=41)
    await oci.push_index("multi", index, "latest")
    untagged = make_image((450,), seed=42)
    await oci.push_image("multi", untagged)
    content = paths.blob_data(Digest.parse(index.digest))
    await site.store.put_content(content, b'{"manifests": [')
    # A fresh process reads the store, not the copy it cached when the index was pushed.
    site.registry.restart()
    before = await stored(site.store)
    children = {image.digest for image in index.images}
    assert children | {index.digest, untagged.digest} == before["multi manifests"]

    for request in ({"delete_untagged": True}, {}):
        outcome = await collect(site.registry, grace_period=NO_GRACE, **request)
        assert outcome.error is not None, f"the collection read past a broken index ({request})"
        assert outcome.error.code() == grpc.StatusCode.ABORTED
        assert outcome.removed == set()
        assert await stored(site.store) == before
        details = outcome.error.details()
        assert f"manifest multi@{index.digest} cannot be read" in details
        assert details.endswith("nothing was removed")

    await site.store.put_content(content, index.manifest.data)
    repaired = await collect(site.registry, delete_untagged=True, grace_period=NO_GRACE)
    assert repaired.error is None and repaired.messages[-1].phase == Phase.DONE
    gone = {untagged.digest, *(b.digest for b in untagged.blobs)}
    assert repaired.removed == {
        manifest_item("multi", untagged.digest),
        *(blob_item(d) for d in gone),
    }
    after = await stored(site.store)
    assert after["blobs"] == before["blobs"] - gone
    assert after["multi manifests"] == children | {index.digest}
    for image in index.images:
        assert (await oci.manifest("multi", image.digest)).status == 200


async def test_a_tag_missing_its_manifest_stops_the_collection(
    site: Site, client: Callable[[RegistryProcess], OCIClient]
) -> None:
    oci = client(site.registry)
    image = make_image((800,), seed=51)
    await oci.push_image("lost", image, "v1")
    orphan = make_blob(700, seed=52)
    await oci.push_blob("lost", orphan.data)
    await site.store.delete(paths.blob_data(Digest.parse(image.digest)))
    before = await stored(site.store)

    outcome = await collect(site.registry, grace_period=NO_GRACE)
    assert outcome.error is not None and outcome.error.code() == grpc.StatusCode.ABORTED
    assert f"manifest lost@{image.digest} has no content" in outcome.error.details()
    assert outcome.removed == set()
    assert await stored(site.store) == before


class StoreWithHooks(StorageDriver):
    """A real store that runs a hook before a chosen call: damage at a chosen moment."""

    def __init__(self, inner: StorageDriver) -> None:
        self.inner = inner
        self.name = inner.name
        self.before_move: Callable[[str, str], Awaitable[None]] | None = None
        self.before_list: Callable[[str], Awaitable[None]] | None = None

    async def stat(self, path: str) -> FileInfo | None:
        return await self.inner.stat(path)

    async def get_content(self, path: str) -> bytes:
        return await self.inner.get_content(path)

    async def put_content(self, path: str, data: bytes, durable: bool = True) -> None:
        await self.inner.put_content(path, data, durable)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self.inner.read(path, offset, length)

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        return await self.inner.writer(path, append)

    async def move(self, source: str, destination: str) -> None:
        if self.before_move is not None:
            await self.before_move(source, destination)
        await self.inner.move(source, destination)

    async def delete(self, path: str) -> None:
        await self.inner.delete(path)

    async def list(self, path: str) -> list[str]:
        if self.before_list is not None:
            await self.before_list(path)
        return await self.inner.list(path)


async def run_until_stopped(store: StorageDriver) -> tuple[list[GcItem], CollectionAborted]:
    """A delete_untagged collection over `store` that must stop: what it reported removed."""
    services = Services.build(store)
    gc = GarbageCollector(store, services.repositories, services.manifests)
    reported: list[GcItem] = []
    with pytest.raises(CollectionAborted) as stopped:
        async for progress in gc.run(gc.options(delete_untagged=True, grace_seconds=0)):
            if progress.item is not None:
                reported.append(progress.item)
    return reported, stopped.value


async def test_damage_during_the_sweep_puts_blobs_back_and_names_what_went(
    site: Site, client: Callable[[RegistryProcess], OCIClient]
) -> None:
    oci = client(site.registry)
    tagged = make_image((500, 300), seed=61)
    await oci.push_image("app", tagged, "v1")
    untagged = make_image((400, 200), seed=62)
    await oci.push_image("app", untagged)
    before = await stored(site.store)
    store = StoreWithHooks(site.store)

    async def damage_tag(source: str, destination: str) -> None:
        # The tag breaks once blobs are set aside, before the collection looks again.
        if destination.startswith(paths.GC_TRASH) and store.before_move is not None:
            store.before_move = None
            await site.store.put_content(paths.tag_link("app", "v1"), b"\xff\xfe")

    store.before_move = damage_tag
    reported, stopped = await run_until_stopped(store)
    removed = GcItem(ItemKind.MANIFEST, untagged.digest, "app", size=untagged.manifest.size)
    assert stopped.removed == (removed,)
    assert reported == [removed]
    assert "tag app:v1 does not link to a digest" in str(stopped)
    assert str(stopped).endswith(f"removed before stopping (1): manifest app@{untagged.digest}")
    after = await stored(store)
    # Its manifest is gone, but every blob set aside is back and nothing is left in the trash.
    assert after["app manifests"] == {tagged.digest}
    assert after["blobs"] == before["blobs"]
    assert await walk.trash_runs(store) == []


async def test_a_storage_failure_late_in_the_run_names_everything_removed(
    site: Site, client: Callable[[RegistryProcess], OCIClient]
) -> None:
    oci = client(site.registry)
    tagged = make_image((500,), seed=71)
    await oci.push_image("app", tagged, "v1")
    untagged = make_image((400, 200), seed=72)
    await oci.push_image("app", untagged)
    orphan = make_blob(600, seed=73)
    await oci.push_blob("app", orphan.data)
    before = await stored(site.store)
    store = StoreWithHooks(site.store)

    async def fail_uploads(path: str) -> None:
        if path == paths.uploads_root("app"):
            raise OSError("the store stopped answering")

    store.before_list = fail_uploads
    reported, stopped = await run_until_stopped(store)
    gone = {untagged.digest, *(b.digest for b in untagged.blobs), orphan.digest}
    sizes = {b.digest: b.size for b in (untagged.manifest, *untagged.blobs, orphan)}
    assert set(stopped.removed) == {
        GcItem(ItemKind.MANIFEST, untagged.digest, "app", size=untagged.manifest.size),
        *(GcItem(ItemKind.BLOB, d, size=sizes[d]) for d in gone),
    }
    assert reported == list(stopped.removed)
    assert "OSError: the store stopped answering" in str(stopped)
    assert f"removed before stopping ({len(gone) + 1}): " in str(stopped)
    for item in stopped.removed:
        assert item.describe() in str(stopped)
    assert (await stored(store))["blobs"] == before["blobs"] - gone
