"""Several registry replicas over one S3 bucket behave as one registry.

Two `nimbus registry` processes share a bucket on the local S3 server; requests alternate
between them, as behind a round-robin load balancer.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.images import (
    OCI_MANIFEST,
    Blob,
    canonical_json,
    make_blob,
    make_image,
    write_oci_layout,
)
from tests.fixtures.registry import RegistryFactory, RegistryProcess
from tests.fixtures.s3 import S3Server
from tests.registry.oci_client import OCIClient
from tests.scaleout.balancer import RoundRobin

MiB = 1 << 20
# The smallest part S3 allows, so that a few MiB make a multipart upload with several parts.
PART_SIZE = 5 * MiB


@dataclass
class Replicas:
    a: RegistryProcess
    b: RegistryProcess
    bucket: str
    client_a: OCIClient
    client_b: OCIClient


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        yield session


@pytest.fixture
def replicas(
    registry_factory: RegistryFactory, s3_server: S3Server, http: aiohttp.ClientSession
) -> Replicas:
    bucket = s3_server.create_bucket()
    args = ["--s3-part-size", str(PART_SIZE)]
    a = registry_factory(storage="s3", s3_bucket=bucket, extra_args=args)
    b = registry_factory(storage="s3", s3_bucket=bucket, extra_args=args)
    return Replicas(a, b, bucket, OCIClient(http, a.url), OCIClient(http, b.url))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def unfinished_uploads(s3_server: S3Server, bucket: str) -> list[str]:
    """Keys of the multipart uploads the store holds open."""
    async with s3_server.client() as s3:
        listed = await s3.list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in listed.get("Uploads", [])]


async def test_an_upload_continues_on_the_other_replica(replicas: Replicas) -> None:
    a, b = replicas.client_a, replicas.client_b
    data = make_blob(PART_SIZE * 2 + 3 * MiB + 17, seed=1).data
    cuts = [0, PART_SIZE + MiB, 2 * PART_SIZE + 2 * MiB, len(data) - 1000]

    location = await a.start_upload("split/blob")
    # Chunks alternate replicas; each takes the upload on from where the other left it.
    for i, (first, end) in enumerate(itertools.pairwise(cuts)):
        client = b if i % 2 == 0 else a
        reply = await client.patch(location, data[first:end], first)
        assert reply.status == 202, reply.body
        assert reply.headers["Range"] == f"0-{end - 1}"
        location = reply.headers["Location"]
        other = a if client is b else b
        status = await other.request("GET", location)
        assert status.status == 204
        assert status.headers["Range"] == f"0-{end - 1}"
    # An out-of-order chunk is refused by either replica, knowing where the other stopped.
    stale = await a.patch(location, data[:10], 0)
    assert stale.status == 416

    digest = sha256(data)
    reply = await b.finish(location, digest, data[cuts[-1] :])
    assert reply.status == 201, reply.body
    for client in (a, b):
        got = await client.blob("split/blob", digest)
        assert got.status == 200 and got.body == data
        ranged = await client.blob("split/blob", digest, headers={"Range": "bytes=5242870-5242899"})
        assert ranged.status == 206 and ranged.body == data[5242870:5242900]


async def test_a_tag_written_on_one_replica_is_read_on_the_other(replicas: Replicas) -> None:
    a, b = replicas.client_a, replicas.client_b
    image = make_image((2000, 3000), seed=2)
    await a.push_image("app/web", image, "v1")

    got = await b.manifest("app/web", "v1", accept=[OCI_MANIFEST])
    assert got.status == 200
    assert got.headers["Docker-Content-Digest"] == image.digest
    assert got.body == image.manifest.data
    tags = await b.request("GET", "/v2/app/web/tags/list")
    assert tags.json() == {"name": "app/web", "tags": ["v1"]}
    catalog = await b.request("GET", "/v2/_catalog")
    assert catalog.json()["repositories"] == ["app/web"]
    for blob in image.blobs:
        assert (await b.blob("app/web", blob.digest)).body == blob.data

    # Deleted on b, gone on a at once, though a wrote the tag (replicas cache no links).
    deleted = await b.request("DELETE", f"/v2/app/web/manifests/{image.digest}")
    assert deleted.status == 202
    assert (await a.manifest("app/web", "v1")).status == 404
    assert (await a.manifest("app/web", image.digest)).status == 404


async def test_concurrent_pushes_of_one_tag_end_with_one_winner(replicas: Replicas) -> None:
    a, b = replicas.client_a, replicas.client_b
    config = Blob("application/vnd.oci.image.config.v1+json", b"{}")
    layer = make_blob(4096, seed=3)
    await a.push_blobs("race/app", [config, layer])
    manifests = [
        Blob(
            OCI_MANIFEST,
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": config.descriptor(),
                    "layers": [layer.descriptor()],
                    "annotations": {"attempt": str(i)},
                }
            ),
        )
        for i in range(8)
    ]
    replies = await asyncio.gather(
        *(
            (a if i % 2 else b).put_manifest("race/app", "latest", m)
            for i, m in enumerate(manifests)
        )
    )
    assert [r.status for r in replies] == [201] * len(manifests)

    # Both replicas answer the same winner at once, whichever wrote last.
    answers = [await c.manifest("race/app", "latest", accept=[OCI_MANIFEST]) for c in (a, b)]
    winner = answers[0].headers["Docker-Content-Digest"]
    assert winner in {m.digest for m in manifests}
    for answer in answers:
        assert answer.status == 200
        assert answer.headers["Docker-Content-Digest"] == winner
        assert sha256(answer.body) == winner
    for client in (a, b):
        tags = await client.request("GET", "/v2/race/app/tags/list")
        assert tags.json()["tags"] == ["latest"]
        # Every pushed manifest stays stored by digest; only the tag has one winner.
        for m in manifests:
            assert (await client.manifest("race/app", m.digest)).status == 200


async def test_a_multipart_upload_resumes_after_a_registry_restart(
    replicas: Replicas, s3_server: S3Server
) -> None:
    a = replicas.client_a
    data = make_blob(3 * PART_SIZE + 12345, seed=4).data
    first_cut, second_cut = PART_SIZE + 2 * MiB, 2 * PART_SIZE + 3 * MiB

    location = await a.start_upload("resume/blob")
    assert (await a.patch(location, data[:first_cut], 0)).status == 202
    # Whole parts went to an S3 multipart upload; the registry holds nothing of it in memory.
    assert len(await unfinished_uploads(s3_server, replicas.bucket)) == 1

    replicas.a.kill()
    replicas.a.start()
    status = await a.request("GET", location)
    assert status.status == 204
    assert status.headers["Range"] == f"0-{first_cut - 1}"
    assert (await a.patch(location, data[first_cut:second_cut], first_cut)).status == 202

    replicas.a.kill()
    replicas.a.start()
    digest = sha256(data)
    reply = await a.finish(location, digest, data[second_cut:])
    assert reply.status == 201, reply.body
    assert (await a.blob("resume/blob", digest)).body == data
    assert (await replicas.client_b.blob("resume/blob", digest)).body == data
    # Nothing left behind: no open multipart upload, no writer state, no upload session.
    assert await unfinished_uploads(s3_server, replicas.bucket) == []
    keys = s3_server.keys(replicas.bucket)
    assert not [k for k in keys if "/_uploads/" in k or ".nimbus-writer" in k], keys


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
async def test_skopeo_through_a_round_robin_balancer(replicas: Replicas, tmp_path: Path) -> None:
    """A real client, each of its requests served by the next replica."""
    image = make_image((6 * MiB, 300_000, 1_200_000), seed=5)
    layout = write_oci_layout(tmp_path / "source", {"v1": image})
    balancer = await RoundRobin([replicas.a.url, replicas.b.url]).start()
    try:
        await skopeo(
            "copy",
            "--dest-tls-verify=false",
            layout.ref("v1"),
            f"docker://{balancer.host}/lb/app:v1",
        )
        pulled = tmp_path / "pulled"
        await skopeo(
            "copy",
            "--src-tls-verify=false",
            f"docker://{balancer.host}/lb/app:v1",
            f"oci:{pulled}:v1",
        )
    finally:
        await balancer.stop()
    assert balancer.served[0] > 5 and balancer.served[1] > 5
    index = json.loads((pulled / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest
    for blob in (image.manifest, *image.blobs):
        algorithm, hex_ = blob.digest.split(":")
        assert sha256((pulled / "blobs" / algorithm / hex_).read_bytes()) == blob.digest


async def skopeo(*args: str) -> None:
    """skopeo as a child process, without blocking the loop the balancer runs on."""
    proc = await asyncio.create_subprocess_exec(
        "skopeo",
        "--insecure-policy",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}:\n{err.decode()}"
