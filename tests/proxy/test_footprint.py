"""A registry without upstreams never imports the cache's upstream and HTTP-client machinery;
one with an upstream does (so the probe sees them when they are there)."""

from __future__ import annotations

from tests.fixtures.registry import RegistryFactory, RegistryProcess
from tests.proxy.conftest import CacheFactory, http

# Modules that only a pull-through cache needs.
CACHE_ONLY = (
    "registry.proxy.service",
    "registry.proxy.upstreams",
    "registry.proxy.fills",
    "registry.proxy.singleflight",
    "registry.proxy.lifecycle",
    "registry.api.proxy",
    "nimbus.oci.client",
    "nimbus.oci.transport",
)
PROFILE = {"PYTHONPROFILEIMPORTTIME": "1"}


def imported(registry: RegistryProcess) -> set[str]:
    """Modules the registry process imported, from its `-X importtime` lines."""
    names = set()
    for line in registry.log_text().splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def exercise(registry: RegistryProcess) -> None:
    """Pull paths run (a manifest and a blob that are missing), so lazy imports happen too."""
    assert http(f"{registry.url}/v2/team/app/manifests/1").status == 404
    assert http(f"{registry.url}/v2/team/app/blobs/sha256:{'0' * 64}").status == 404


def test_a_registry_without_upstreams_imports_no_cache_machinery(
    registry_factory: RegistryFactory,
) -> None:
    registry = registry_factory(env=PROFILE)
    exercise(registry)
    names = imported(registry)
    assert "registry.app" in names  # the probe reads the process's imports
    assert names.isdisjoint(CACHE_ONLY), sorted(names & set(CACHE_ONLY))


def test_a_registry_with_an_upstream_imports_it(
    registry_factory: RegistryFactory, cache_factory: CacheFactory
) -> None:
    upstream = registry_factory()
    cache = cache_factory(
        [{"name": "up", "url": upstream.url, "prefix": "mirror.test"}],
        env=PROFILE,
    )
    exercise(cache)
    names = imported(cache)
    assert {"registry.proxy.service", "nimbus.oci.client", "registry.api.proxy"} <= names
