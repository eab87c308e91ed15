"""The registry's configuration model."""

from __future__ import annotations

from dataclasses import dataclass, field

from nimbus.config import ConfigError, split_hostport
from nimbus.eventloop import LOOPS
from nimbus.natsconn import NatsOptions


@dataclass
class EventsConfig:
    """Publishing to NATS JetStream; off while `nats` is empty."""

    nats: list[str] = field(default_factory=list)
    site: str = "local"
    # Authentication: a credentials file, a token, or a user and password (or none).
    nats_creds: str = ""
    nats_token: str = ""
    nats_user: str = ""
    nats_password: str = ""
    # TLS: CA bundle to trust; client certificate and key for mutual TLS.
    nats_tls_ca: str = ""
    nats_tls_cert: str = ""
    nats_tls_key: str = ""
    # Retention of the event stream (0: unlimited).
    stream_max_age: float = 7 * 24 * 3600.0
    stream_max_bytes: int = 0
    stream_max_msgs: int = 0
    stream_replicas: int = 1
    # How long JetStream drops re-published copies of an event; covers an outbox flushed after
    # a crash, so keep it longer than a registry restart takes.
    duplicate_window: float = 600.0
    # The longest a request waits for the JetStream ack before the event goes to the outbox.
    publish_timeout: float = 0.5
    # Events NATS has not acknowledged yet (default: <data_dir>/_outbox). Local disk.
    outbox_dir: str = ""
    # Emit blob upload completions (like Distribution, they can be ignored).
    blob_uploads: bool = True
    # Emit pulls (manifest GETs); off by default to keep the stream about changes.
    pulls: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.nats)

    def nats_options(self, name: str) -> NatsOptions:
        return NatsOptions(
            servers=list(self.nats),
            name=name,
            creds=self.nats_creds,
            token=self.nats_token,
            user=self.nats_user,
            password=self.nats_password,
            tls_ca=self.nats_tls_ca,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
        )

    def validate(self) -> None:
        if not self.site.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("events.site: letters, digits, '-' and '_' only")
        for url in self.nats:
            if "://" not in url:
                raise ConfigError(f"events.nats: {url!r} is not a URL like nats://HOST:PORT")
        if not 0 < self.publish_timeout <= 30:
            raise ConfigError("events.publish_timeout: seconds, above 0 and at most 30")
        if self.duplicate_window <= 0:
            raise ConfigError("events.duplicate_window: seconds, above 0")
        if 0 < self.stream_max_age < self.duplicate_window:
            raise ConfigError("events.duplicate_window: cannot exceed events.stream_max_age")
        if self.stream_max_age < 0 or self.stream_max_bytes < 0 or self.stream_max_msgs < 0:
            raise ConfigError("events.stream_max_*: 0 (unlimited) or more")
        if not 1 <= self.stream_replicas <= 5:
            raise ConfigError("events.stream_replicas: between 1 and 5")
        if self.nats_tls_key and not self.nats_tls_cert:
            raise ConfigError("events.nats_tls_key: needs events.nats_tls_cert")
        if bool(self.nats_user) != bool(self.nats_password):
            raise ConfigError("events.nats_user and events.nats_password: give both or neither")


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
        self.events.validate()

    @property
    def host(self) -> str:
        return split_hostport(self.listen, "listen")[0]

    @property
    def port(self) -> int:
        return split_hostport(self.listen, "listen")[1]
