"""The registry's configuration model."""

from __future__ import annotations

from dataclasses import dataclass, field

from nimbus.config import ConfigError, split_hostport
from nimbus.eventloop import LOOPS


@dataclass
class EventsConfig:
    """Publishing to NATS JetStream; off while `nats` is empty."""

    nats: list[str] = field(default_factory=list)
    site: str = "local"
    # Emit blob upload completions (like Distribution, they can be ignored).
    blob_uploads: bool = True
    # Emit pulls (manifest GETs); off by default to keep the stream about changes.
    pulls: bool = False


@dataclass
class RegistryConfig:
    listen: str = "127.0.0.1:5000"
    data_dir: str = "./data"
    workers: int = 1
    log_level: str = "info"
    access_log: bool = True
    catalog_page_size: int = 1000
    # How long a tag or manifest lookup is reused; changes made through another worker or
    # replica become visible after at most this long. 0 turns the cache off.
    link_cache_ttl: float = 1.0
    # The standard loop has zero-copy sendfile for blobs; see nimbus/eventloop.py.
    event_loop: str = "asyncio"
    events: EventsConfig = field(default_factory=EventsConfig)

    def validate(self) -> None:
        split_hostport(self.listen, "listen")
        if self.workers < 1:
            raise ConfigError("workers: must be at least 1")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level: one of debug, info, warning, error")
        if not 1 <= self.catalog_page_size <= 10_000:
            raise ConfigError("catalog_page_size: between 1 and 10000")
        if self.event_loop not in LOOPS:
            raise ConfigError(f"event_loop: one of {', '.join(LOOPS)}")
        if self.link_cache_ttl < 0:
            raise ConfigError("link_cache_ttl: must be 0 or more seconds")
        if not self.events.site.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("events.site: letters, digits, '-' and '_' only")

    @property
    def host(self) -> str:
        return split_hostport(self.listen, "listen")[0]

    @property
    def port(self) -> int:
        return split_hostport(self.listen, "listen")[1]
