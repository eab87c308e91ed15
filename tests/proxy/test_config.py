"""The `proxy` section: YAML, environment and flags; mistakes named by their key; routing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from nimbus.config import ConfigError, load
from registry.cli import add_arguments, flags
from registry.config import RegistryConfig
from registry.proxy.upstreams import Router

HUB = {"name": "hub", "url": "https://registry-1.docker.io", "prefix": "docker.io"}


def config_of(tmp_path: Path, proxy: dict[str, object]) -> RegistryConfig:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"proxy": proxy}))
    return load(RegistryConfig, str(path), env={})


@pytest.mark.parametrize(
    ("upstream", "key"),
    [
        ({"url": "https://x.example"}, "proxy.upstreams[0].name"),
        ({"name": "a", "url": "ftp://x.example"}, "proxy.upstreams[0].url"),
        ({"name": "a", "url": "https://x", "prefix": "Docker.IO"}, "proxy.upstreams[0].prefix"),
        ({"name": "a", "url": "https://x", "password": "p"}, "proxy.upstreams[0].username"),
        ({"name": "a", "url": "https://x", "tag_ttl": -1}, "proxy.upstreams[0].tag_ttl"),
        ({"name": "a", "url": "https://x", "ca_bundle": "/no/x"}, "proxy.upstreams[0].ca_bundle"),
        ({"name": "a", "url": "https://x", "colour": 1}, "proxy.upstreams[0].colour"),
        ({"name": "a", "url": "https://x", "tag_ttl": "soon"}, "proxy.upstreams[0].tag_ttl"),
    ],
)
def test_a_bad_upstream_is_named_by_its_key(
    tmp_path: Path, upstream: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_of(tmp_path, {"upstreams": [upstream]})


def test_duplicates_and_an_unknown_default_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"proxy.upstreams\[1\].name"):
        config_of(tmp_path, {"upstreams": [HUB, {**HUB, "prefix": "other"}]})
    with pytest.raises(ConfigError, match=r"proxy.upstreams\[1\].prefix"):
        config_of(tmp_path, {"upstreams": [HUB, {**HUB, "name": "two"}]})
    with pytest.raises(ConfigError, match=r"proxy\.default"):
        config_of(tmp_path, {"upstreams": [HUB], "default": "nope"})


def test_environment_and_flags(tmp_path: Path) -> None:
    env = {"NIMBUS_PROXY_UPSTREAMS": "[{name: hub, url: 'https://h', prefix: docker.io}]"}
    config = load(RegistryConfig, env={**env, "NIMBUS_PROXY_DEFAULT": "hub"})
    assert config.proxy.upstreams[0].prefix == "docker.io"
    assert config.proxy.default == "hub"

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--proxy-upstream",
            "name=hub,url=https://h,prefix=docker.io,tag_ttl=60,include=library/*,include=team/**",
            "--proxy-upstream",
            "name=ghcr,url=https://ghcr.io,prefix=ghcr.io",
            "--proxy-default",
            "hub",
        ]
    )
    config = load(RegistryConfig, env={}, flags=flags(args))
    hub, ghcr = config.proxy.upstreams
    assert (hub.tag_ttl, hub.include) == (60.0, ["library/*", "team/**"])
    assert ghcr.url == "https://ghcr.io"
    assert config.proxy.default == "hub"


async def test_routing(tmp_path: Path) -> None:
    config = config_of(
        tmp_path,
        {
            "upstreams": [
                {**HUB, "exclude": ["private/**"]},
                {"name": "ghcr", "url": "https://ghcr.io", "prefix": "ghcr.io"},
                {"name": "plain", "url": "http://127.0.0.1:5001"},
            ],
            "default": "hub",
        },
    )
    router = Router.from_config(config.proxy)
    try:

        def where(name: str, ns: str | None = None) -> tuple[str, str, str] | None:
            route = router.route(name, ns)
            return (route.upstream.name, route.name, route.remote) if route else None

        hub = ("hub", "docker.io/library/nginx", "library/nginx")
        assert where("docker.io/library/nginx") == hub
        # Docker Hub's official images are under library/.
        assert where("docker.io/nginx") == ("hub", "docker.io/nginx", "library/nginx")
        assert where("ghcr.io/org/app") == ("ghcr", "ghcr.io/org/app", "org/app")
        assert where("library/nginx") == ("hub", "library/nginx", "library/nginx")
        assert where("org/app", "ghcr.io") == ("ghcr", "ghcr.io/org/app", "org/app")
        # An upstream without a prefix, not the default: no ?ns= can mean it.
        assert where("team/app", "127.0.0.1:5001") == ("hub", "team/app", "team/app")
        # Left out by the globs: a local repository.
        assert where("docker.io/private/app") is None
    finally:
        await router.close()
