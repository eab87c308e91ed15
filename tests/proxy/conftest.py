"""Fixtures of the pull-through cache tests: a real upstream (CNCF Distribution) behind a
counting, fault-injecting proxy, images pushed to it with skopeo, and Nimbus registries
configured to mirror it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.distribution import DistributionFactory, DistributionProcess
from tests.fixtures.images import OCILayout
from tests.fixtures.registry import RegistryFactory, RegistryProcess
from tests.proxy.upstream_proxy import UpstreamProxy

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")

PREFIX = "mirror.test"


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"skopeo {' '.join(args)}:\n{result.stderr}"
    return result


def push(layout: OCILayout, tag: str, host: str, ref: str, *extra: str) -> None:
    skopeo("copy", "--dest-tls-verify=false", *extra, layout.ref(tag), f"docker://{host}/{ref}")


def pull(host: str, ref: str, dest: Path, *extra: str) -> None:
    skopeo("copy", "--src-tls-verify=false", *extra, f"docker://{host}/{ref}", f"oci:{dest}:x")


def layout_blobs(path: Path) -> dict[str, bytes]:
    """Every blob of a pulled OCI layout, checked against its file name."""
    found = {}
    for file in (path / "blobs" / "sha256").iterdir():
        data = file.read_bytes()
        assert hashlib.sha256(data).hexdigest() == file.name
        found[f"sha256:{file.name}"] = data
    return found


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def http(url: str, method: str = "GET", accept: str = "", data: bytes | None = None) -> Answer:
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return Answer(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


@dataclass
class Upstream:
    """A Distribution and the proxy in front of it; Nimbus is pointed at the proxy."""

    registry: DistributionProcess | RegistryProcess
    proxy: UpstreamProxy

    @property
    def url(self) -> str:
        return self.proxy.url


UpstreamFactory = Callable[[], Upstream]


@pytest.fixture
def upstream_factory(distribution_factory: DistributionFactory) -> Iterator[UpstreamFactory]:
    proxies: list[UpstreamProxy] = []

    def make() -> Upstream:
        registry = distribution_factory()
        proxy = UpstreamProxy(registry.url).start()
        proxies.append(proxy)
        return Upstream(registry, proxy)

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def upstream(upstream_factory: UpstreamFactory) -> Upstream:
    return upstream_factory()


CacheFactory = Callable[..., RegistryProcess]


@pytest.fixture
def cache_factory(registry_factory: RegistryFactory, tmp_path: Path) -> CacheFactory:
    """A Nimbus registry with a `proxy` section: upstream sections and the default's name."""
    count = 0

    def make(
        upstreams: list[dict[str, Any]],
        default: str = "",
        extra_args: list[str] | None = None,
        storage: str = "filesystem",
        env: dict[str, str] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> RegistryProcess:
        """``settings``: more keys of the proxy section (max_bytes, tag_max_idle, ...)."""
        nonlocal count
        count += 1
        config = tmp_path / f"cache-{count}.yaml"
        proxy = {"upstreams": upstreams, "default": default, **(settings or {})}
        config.write_text(yaml.safe_dump({"proxy": proxy}))
        return registry_factory(
            ["--config", str(config), *(extra_args or [])], storage=storage, env=env
        )

    return make


def stored_blob(cache: RegistryProcess, digest: str) -> Path:
    algorithm, hex_ = digest.split(":", 1)
    return cache.data_dir / "blobs" / algorithm / hex_[:2] / hex_ / "data"
