"""A private upstream: a Nimbus with Docker token authentication stands in for one; the cache
pulls with its configured credentials, and without them says the upstream refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth.conftest import USERS, write_config
from tests.fixtures.images import OCI_MANIFEST, LayoutFactory, make_image
from tests.fixtures.registry import RegistryProcess
from tests.proxy.conftest import PREFIX, CacheFactory, http, layout_blobs, pull, push

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


@pytest.fixture
def private(tmp_path: Path) -> Iterator[RegistryProcess]:
    directory = tmp_path / "private"
    directory.mkdir()
    config = write_config(directory)
    registry = RegistryProcess(directory / "data", ["--config", str(config), "--auth-token"])
    yield registry.start()
    registry.stop()


def test_a_token_auth_upstream_is_pulled_with_the_configured_credentials(
    private: RegistryProcess,
    cache_factory: CacheFactory,
    oci_layout_factory: LayoutFactory,
    tmp_path: Path,
) -> None:
    image = make_image((100_000, 20_000), seed=170)
    push(
        oci_layout_factory({"1": image}),
        "1",
        private.host,
        "team/app:1",
        f"--dest-creds=bob:{USERS['bob']}",
    )
    cache = cache_factory(
        [
            {
                "name": "private",
                "url": private.url,
                "prefix": PREFIX,
                "username": "bob",
                "password": USERS["bob"],
            },
            {"name": "anonymous", "url": private.url, "prefix": "anon.example"},
        ]
    )
    pull(cache.host, f"{PREFIX}/team/app:1", tmp_path / "pulled")
    pulled = layout_blobs(tmp_path / "pulled")
    for blob in (image.manifest, *image.blobs):
        assert pulled[blob.digest] == blob.data

    refused = http(f"{cache.url}/v2/anon.example/team/app/manifests/1", accept=OCI_MANIFEST)
    assert refused.status == 403
    error = json.loads(refused.body)["errors"][0]
    assert error["code"] == "DENIED"
    assert "upstream anonymous refused access" in error["message"]
    # The password never reaches the log.
    assert USERS["bob"] not in cache.log_text()
