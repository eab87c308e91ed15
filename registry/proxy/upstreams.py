"""Upstream registries, and which of them serves a repository name under which name there."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from nimbus.oci.client import RegistryClient
from nimbus.oci.transport import Credentials, ssl_context
from registry.auth.access import glob_to_regex
from registry.config import ProxyConfig, UpstreamConfig

# Docker Hub serves its official images under `library/`; `docker.io/nginx` means that.
_DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "index.docker.io", "docker.io"})


@dataclass(frozen=True)
class Upstream:
    """One configured upstream with its client (one connection pool and token cache)."""

    name: str
    url: str
    prefix: str
    tag_ttl: float
    timeout: float
    client: RegistryClient
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    @property
    def host(self) -> str:
        """HOST[:PORT] of the URL, as containerd names a registry in `?ns=`."""
        return urlsplit(self.url).netloc.rpartition("@")[2].lower()

    @property
    def docker_hub(self) -> bool:
        return (urlsplit(self.url).hostname or "") in _DOCKER_HUB_HOSTS

    def serves(self, remote: str) -> bool:
        """Whether the include and exclude globs let this upstream serve ``remote``."""
        if self.include and not any(p.fullmatch(remote) for p in self.include):
            return False
        return not any(p.fullmatch(remote) for p in self.exclude)

    async def close(self) -> None:
        await self.client.close()

    @classmethod
    def from_config(cls, config: UpstreamConfig) -> Upstream:
        credentials = None
        if config.username or config.token:
            credentials = Credentials(config.username, config.password, config.token)
        client = RegistryClient(
            config.url,
            credentials,
            ssl=ssl_context(True, config.ca_bundle),
            connect_timeout=config.timeout,
            read_timeout=config.timeout,
            max_connections=64,
        )
        return cls(
            name=config.name,
            url=config.url.rstrip("/"),
            prefix=config.prefix,
            tag_ttl=config.tag_ttl,
            timeout=config.timeout,
            client=client,
            include=tuple(glob_to_regex(g) for g in config.include),
            exclude=tuple(glob_to_regex(g) for g in config.exclude),
        )


@dataclass(frozen=True, slots=True)
class Route:
    """A local repository name served by an upstream, and its name there."""

    upstream: Upstream
    name: str
    remote: str


class Router:
    """Picks the upstream of a repository name: `?ns=`, then the longest prefix, then the
    default upstream; a name no upstream serves (or whose globs leave it out) is local."""

    def __init__(self, upstreams: Sequence[Upstream], default: str = "") -> None:
        self.upstreams = tuple(upstreams)
        self._by_prefix = sorted(
            (u for u in self.upstreams if u.prefix), key=lambda u: len(u.prefix), reverse=True
        )
        self._default = next((u for u in self.upstreams if u.name == default), None)

    @classmethod
    def from_config(cls, config: ProxyConfig) -> Router:
        return cls([Upstream.from_config(u) for u in config.upstreams], config.default)

    @property
    def enabled(self) -> bool:
        return bool(self.upstreams)

    @property
    def default(self) -> Upstream | None:
        """The upstream of names under no prefix, if one is configured."""
        return self._default

    def by_namespace(self, namespace: str) -> Upstream | None:
        """The upstream containerd means by `?ns=HOST`: its prefix, else its URL's host.

        Only an upstream with a prefix, or the default one, can be meant: what it caches is
        kept under the prefixed name (or the plain one), so a request with `?ns=` and one with
        the prefixed name share one cache and never meet a local repository's name.
        """
        wanted = namespace.lower()
        for upstream in self.upstreams:
            if upstream.prefix == wanted:
                return upstream
        for upstream in self.upstreams:
            if upstream.host == wanted and (upstream.prefix or upstream is self._default):
                return upstream
        return None

    def route(self, name: str, namespace: str | None = None) -> Route | None:
        if not self.upstreams:
            return None
        if namespace:
            upstream = self.by_namespace(namespace)
            if upstream is not None:
                local = f"{upstream.prefix}/{name}" if upstream.prefix else name
                return self._served(upstream, local, name)
        for upstream in self._by_prefix:
            if name.startswith(upstream.prefix + "/"):
                return self._served(upstream, name, name[len(upstream.prefix) + 1 :])
        if self._default is not None:
            return self._served(self._default, name, name)
        return None

    @staticmethod
    def _served(upstream: Upstream, name: str, remote: str) -> Route | None:
        if upstream.docker_hub and "/" not in remote:
            remote = f"library/{remote}"
        return Route(upstream, name, remote) if upstream.serves(remote) else None

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.close()
