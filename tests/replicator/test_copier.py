"""The copy engine between real registries: Nimbus to Nimbus and Nimbus to Distribution."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest

from nimbus.oci import mediatypes as mt
from nimbus.oci.digests import OFFLOAD_BYTES
from nimbus.oci.errors import DigestMismatchError
from nimbus.oci.referrers import referrers_tag
from replicator.copier import Copier, SourceMissingError
from tests.fixtures.distribution import DistributionProcess
from tests.fixtures.images import LayoutFactory, make_artifact, make_image, make_multiplatform
from tests.fixtures.registry import RegistryFactory
from tests.replicator.conftest import (
    ClientFactory,
    assert_complete,
    push_by_digest,
    push_image,
    skopeo_copy,
)


async def test_graph_copies_to_nimbus_and_distribution(
    registry_factory: RegistryFactory,
    distribution: DistributionProcess,
    oci_layout_factory: LayoutFactory,
    oci_client: ClientFactory,
) -> None:
    a, b = registry_factory(), registry_factory()
    image = make_image((3000, 5000, 7000), seed=11)
    index = make_multiplatform((2000, 4000), seed=12)
    layout = oci_layout_factory({"one": image, "multi": index})
    skopeo_copy(layout, "one", a.host, "app/one")
    skopeo_copy(layout, "multi", a.host, "app/multi")
    source = oci_client(a.url)
    signature = make_artifact(image.manifest, "application/vnd.example.signature", b"sig-1")
    await push_by_digest(source, "app/one", signature)

    for peer_url in (b.url, distribution.url):
        target = oci_client(peer_url)
        copier = Copier(source, target)
        first = await copier.copy("app/one", "one")
        assert first.digest == image.digest and first.tagged
        assert first.blobs_copied == 4 + 2  # config and 3 layers, the signature's config and layer
        await assert_complete(target, "app/one", "one", image)
        got = await target.get_manifest("app/one", signature.digest)
        assert got is not None and got.data == signature.manifest.data
        referrers = await target.referrers("app/one", image.digest)
        assert [r["digest"] for r in referrers] == [signature.digest]
        assert referrers[0]["artifactType"] == "application/vnd.example.signature"

        multi = await copier.copy("app/multi", "multi")
        assert multi.manifests_copied == 3
        await assert_complete(target, "app/multi", "multi", index)

        # Replaying is harmless and moves nothing.
        again = await copier.copy("app/one", "one")
        assert (again.blobs_copied, again.manifests_copied, again.tagged) == (0, 0, False)

    # Distribution has no referrers API: the signature is indexed under the fallback tag.
    dist = oci_client(distribution.url)
    fallback = await dist.get_manifest("app/one", referrers_tag(image.digest))
    assert fallback is not None and fallback.media_type == mt.OCI_INDEX
    assert [m["digest"] for m in fallback.json()["manifests"]] == [signature.digest]


async def test_large_blob_streams_in_chunks_and_mounts_across_repositories(
    registry_factory: RegistryFactory, oci_client: ClientFactory
) -> None:
    a, b = registry_factory(), registry_factory()
    image = make_image((9 * 1024 * 1024, 1000), seed=21)
    source, target = oci_client(a.url), oci_client(b.url)
    await push_image(source, "big/one", "v1", image)
    await push_image(source, "big/two", "v1", image)
    copier = Copier(source, target, chunk_size=2 * 1024 * 1024)
    first = await copier.copy("big/one", "v1")
    assert first.blobs_copied == 3
    assert first.bytes_copied == sum(blob.size for blob in image.blobs)
    await assert_complete(target, "big/one", "v1", image)
    # The same blobs in another repository at the peer are mounted, not copied again.
    second = await copier.copy("big/two", "v1")
    assert (second.blobs_copied, second.blobs_mounted, second.bytes_copied) == (0, 3, 0)
    await assert_complete(target, "big/two", "v1", image)


async def test_corrupt_source_blob_never_reaches_the_peer(
    registry_factory: RegistryFactory, oci_client: ClientFactory
) -> None:
    a, b = registry_factory(), registry_factory()
    image = make_image((50_000,), seed=31)
    source, target = oci_client(a.url), oci_client(b.url)
    await push_image(source, "bad/one", "v1", image)
    layer = image.layers[0]
    hex_ = layer.digest.split(":", 1)[1]
    stored = a.data_dir / "blobs" / "sha256" / hex_[:2] / hex_ / "data"
    corrupt = bytearray(stored.read_bytes())
    corrupt[100] ^= 0xFF
    stored.write_bytes(bytes(corrupt))
    with pytest.raises(DigestMismatchError):
        await Copier(source, target).copy("bad/one", "v1")
    assert await target.blob_size("bad/one", layer.digest) is None
    assert await target.head_manifest("bad/one", "v1") is None


async def test_missing_source_is_reported(
    registry_factory: RegistryFactory, oci_client: ClientFactory
) -> None:
    a, b = registry_factory(), registry_factory()
    with pytest.raises(SourceMissingError):
        await Copier(oci_client(a.url), oci_client(b.url)).copy("nothing/here", "v1")


class _RecordingHash:
    """A hashlib object that notes the size of each update and the thread it ran on."""

    def __init__(self, inner: Any, calls: list[tuple[int, int]]) -> None:
        self._inner = inner
        self._calls = calls

    def update(self, data: bytes) -> None:
        self._calls.append((len(data), threading.get_ident()))
        self._inner.update(data)

    def hexdigest(self) -> str:
        return str(self._inner.hexdigest())


async def test_blob_bytes_are_hashed_off_the_event_loop(
    registry_factory: RegistryFactory, oci_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = registry_factory(), registry_factory()
    image = make_image((5 * 1024 * 1024 + 123, 3000), seed=41)
    source, target = oci_client(a.url), oci_client(b.url)
    await push_image(source, "hash/one", "v1", image)

    calls: list[tuple[int, int]] = []
    real_new = hashlib.new
    monkeypatch.setattr(
        hashlib, "new", lambda name, *args, **kw: _RecordingHash(real_new(name, *args, **kw), calls)
    )
    loop_thread = threading.get_ident()
    result = await Copier(source, target, chunk_size=2 * 1024 * 1024).copy("hash/one", "v1")
    assert result.blobs_copied == 3
    await assert_complete(target, "hash/one", "v1", image)

    off_loop = sum(size for size, thread in calls if thread != loop_thread)
    on_loop = [size for size, thread in calls if thread == loop_thread]
    # Every MiB of the big layer went to a thread; only small updates stayed on the loop.
    assert off_loop >= 5 * 1024 * 1024
    assert all(size < OFFLOAD_BYTES for size in on_loop), on_loop
