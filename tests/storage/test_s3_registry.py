"""A registry on the S3 driver: its configuration, its start, and blob GETs by redirect."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from nimbus.config import ConfigError, load
from registry.config import RegistryConfig
from tests.fixtures.images import make_blob
from tests.fixtures.registry import RegistryFactory
from tests.fixtures.s3 import S3Server
from tests.registry.oci_client import OCIClient

MiB = 1 << 20


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        yield session


def test_storage_section_from_file_environment_and_flags(tmp_path: Path) -> None:
    file = tmp_path / "registry.yaml"
    file.write_text(
        "storage:\n"
        "  driver: s3\n"
        "  s3:\n"
        "    bucket: images\n"
        "    prefix: site-a/registry\n"
        "    region: eu-west-1\n"
        "    multipart_part_size: 16777216\n"
    )
    config = load(
        RegistryConfig,
        str(file),
        env={"NIMBUS_STORAGE_S3_REDIRECT": "true", "NIMBUS_STORAGE_S3_PATH_STYLE": "yes"},
        flags={"storage": {"s3": {"endpoint_url": "http://127.0.0.1:9000"}}},
    )
    s3 = config.storage.s3
    assert config.storage.driver == "s3"
    assert (s3.bucket, s3.prefix, s3.region) == ("images", "site-a/registry", "eu-west-1")
    assert s3.multipart_part_size == 16 * MiB
    assert s3.redirect and s3.path_style
    assert s3.endpoint_url == "http://127.0.0.1:9000"
    assert load(RegistryConfig, env={}).storage.driver == "filesystem"


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({"driver": "gcs"}, "storage.driver: one of filesystem, s3"),
        ({"driver": "s3"}, "storage.s3.bucket: required"),
        ({"driver": "s3", "s3": {"bucket": "Bad_Name"}}, "is not a bucket name"),
        ({"driver": "s3", "s3": {"bucket": "ok-bucket", "prefix": "a/../b"}}, "storage.s3.prefix"),
        (
            {"driver": "s3", "s3": {"bucket": "ok-bucket", "endpoint_url": "127.0.0.1:9000"}},
            "storage.s3.endpoint_url",
        ),
        (
            {"driver": "s3", "s3": {"bucket": "ok-bucket", "access_key_id": "only-the-id"}},
            "give both or neither",
        ),
        (
            {"driver": "s3", "s3": {"bucket": "ok-bucket", "multipart_part_size": MiB}},
            "between 5 MiB and 5 GiB",
        ),
    ],
)
def test_invalid_storage_settings_are_refused(storage: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(RegistryConfig, env={}, flags={"storage": storage})


def test_a_registry_on_a_missing_bucket_refuses_to_start(
    s3_server: S3Server, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nimbus.cli",
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "data"),
            *s3_server.registry_args("no-such-bucket"),
        ],
        env={**os.environ, **s3_server.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "storage.s3: bucket 'no-such-bucket' at" in result.stderr
    assert "does not exist" in result.stderr
    assert "Unclosed" not in result.stderr


async def test_blob_gets_redirect_to_the_store(
    registry_factory: RegistryFactory, s3_server: S3Server, http: aiohttp.ClientSession
) -> None:
    registry = registry_factory(storage="s3", extra_args=["--s3-redirect"])
    client = OCIClient(http, registry.url)
    blob = make_blob(3 * MiB + 5, seed=7)
    await client.push_blob("redirect/app", blob.data)

    head = await client.request("HEAD", f"/v2/redirect/app/blobs/{blob.digest}")
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == blob.size

    reply = await client.request(
        "GET", f"/v2/redirect/app/blobs/{blob.digest}", allow_redirects=False
    )
    assert reply.status == 307
    assert reply.headers["Docker-Content-Digest"] == blob.digest
    location = reply.headers["Location"]
    assert location.startswith(s3_server.endpoint_url + "/")
    # The store answers the presigned URL itself, ranges included.
    async with http.get(location, headers={"Range": "bytes=100-199"}) as resp:
        assert resp.status == 206
        assert await resp.read() == blob.data[100:200]
    followed = await client.blob("redirect/app", blob.digest)
    assert followed.status == 200 and followed.body == blob.data
    # Unknown blobs are still the registry's answer, not the store's.
    missing = await client.request(
        "GET", f"/v2/redirect/app/blobs/sha256:{'0' * 64}", allow_redirects=False
    )
    missing.expect_error(404, "BLOB_UNKNOWN")


async def test_a_refused_upload_stores_nothing_in_the_bucket(
    registry_factory: RegistryFactory, s3_server: S3Server, http: aiohttp.ClientSession
) -> None:
    registry = registry_factory(storage="s3")
    assert registry.storage == "s3" and registry.s3_bucket is not None
    client = OCIClient(http, registry.url)
    blob = make_blob(11 * MiB, seed=8)  # over a 10 MiB part: a multipart upload was opened
    location = await client.start_upload("refused/app")
    assert (await client.patch(location, blob.data, 0)).status == 202
    reply = await client.finish(location, f"sha256:{'1' * 64}")
    reply.expect_error(400, "DIGEST_INVALID")
    assert s3_server.keys(registry.s3_bucket) == {}
    async with s3_server.client() as s3:
        uploads = await s3.list_multipart_uploads(Bucket=registry.s3_bucket)
    assert uploads.get("Uploads", []) == []
