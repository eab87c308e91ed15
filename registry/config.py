"""The registry's configuration model."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nimbus.config import ConfigError, split_hostport
from nimbus.eventloop import LOOPS
from nimbus.eventstream import StreamSettings
from nimbus.grpcserver import GrpcServerConfig
from nimbus.natsconn import NatsClientConfig

if TYPE_CHECKING:
    from nimbus.tls.server import ServerTLS

STORAGE_DRIVERS = ("filesystem", "s3")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

# Defaults of the event stream's retention, defined with the stream.
_STREAM = StreamSettings()


@dataclass
class EventsConfig(NatsClientConfig):
    """Publishing to NATS JetStream; off while `nats` is empty."""

    site: str = "local"
    # Retention of the event stream (0: unlimited).
    stream_max_age: float = _STREAM.max_age
    stream_max_bytes: int = _STREAM.max_bytes
    stream_max_msgs: int = _STREAM.max_msgs
    stream_replicas: int = _STREAM.replicas
    # How long JetStream drops re-published copies of an event; covers an outbox flushed after
    # a crash, so keep it longer than a registry restart takes.
    duplicate_window: float = _STREAM.duplicate_window
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

    def validate(self) -> None:
        if not self.site.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("events.site: letters, digits, '-' and '_' only")
        self.validate_nats("events.")
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


@dataclass
class TokenAuthConfig:
    """Bearer tokens (the Docker token specification), from the built-in or an external issuer."""

    enabled: bool = False
    # The token endpoint clients are sent to; default: this registry's /auth/token.
    realm: str = ""
    service: str = "nimbus-registry"
    issuer: str = "nimbus"
    # Built-in issuer: PEM EC P-256 key; default <data_dir>/auth/token.key, made at first start.
    key: str = ""
    expiry: int = 300
    # Refresh tokens for OAuth2 clients (`access_type=offline`); void once the password changes.
    refresh_expiry: int = 30 * 24 * 3600
    # External issuer: its PEM certificate bundle, or its JWKS (file or http(s) URL).
    certificate: str = ""
    jwks: str = ""

    @property
    def external(self) -> bool:
        return bool(self.certificate or self.jwks)

    @property
    def active(self) -> bool:
        return self.enabled or bool(self.realm) or self.external


@dataclass
class AuthConfig:
    """Authentication and access rules; off while nothing here is set."""

    htpasswd: str = ""
    realm: str = "nimbus"
    # Failed logins allowed per client address within the window (seconds) before 429.
    login_attempts: int = 10
    login_window: int = 60
    groups: dict[str, list[str]] = field(default_factory=dict)
    # Rules: {repositories: [globs], actions: [pull, push, delete], users, groups, anonymous}.
    access: list[dict[str, Any]] = field(default_factory=list)
    token: TokenAuthConfig = field(default_factory=TokenAuthConfig)

    @property
    def enabled(self) -> bool:
        return bool(self.htpasswd or self.access or self.token.active)

    def validate(self) -> None:
        from registry.auth.access import AccessConfigError, AccessPolicy

        try:
            AccessPolicy.from_config(self.access, self.groups)
        except AccessConfigError as exc:
            raise ConfigError(str(exc)) from None
        if self.login_attempts < 1 or self.login_window < 1:
            raise ConfigError("auth.login_attempts and auth.login_window: at least 1")
        token = self.token
        if token.certificate and token.jwks:
            raise ConfigError("auth.token.certificate and auth.token.jwks: set one, not both")
        if token.external and not token.realm:
            raise ConfigError("auth.token.realm: required with an external token issuer")
        if token.external and token.key:
            raise ConfigError("auth.token.key: only for the built-in issuer, not an external one")
        if token.active and not (0 < token.expiry <= 24 * 3600):
            raise ConfigError("auth.token.expiry: between 1 and 86400 seconds")
        if token.active and token.refresh_expiry < 1:
            raise ConfigError("auth.token.refresh_expiry: at least 1 second")
        if token.realm and not token.realm.startswith(("http://", "https://")):
            raise ConfigError("auth.token.realm: an http(s) URL")
        for key, value in (("service", token.service), ("issuer", token.issuer)):
            if token.active and (not value or '"' in value or "\\" in value):
                raise ConfigError(f"auth.token.{key}: a non-empty string without quotes")
        if '"' in self.realm or "\\" in self.realm:
            raise ConfigError("auth.realm: no quotes or backslashes")


@dataclass
class S3Config:
    """An S3 bucket (or an S3-compatible store) holding the registry's files under a prefix."""

    bucket: str = ""
    prefix: str = ""
    # Empty: the region of the AWS configuration (AWS_REGION, ~/.aws/config).
    region: str = ""
    # S3-compatible stores: their URL, e.g. http://127.0.0.1:9000; empty for AWS S3.
    endpoint_url: str = ""
    # Address buckets as URL paths (http://host/bucket/key) rather than host names.
    path_style: bool = False
    # Empty: the usual AWS sources (environment, shared credentials file, instance role).
    access_key_id: str = ""
    secret_access_key: str = ""
    # Answer blob GETs with a 307 to a presigned URL instead of proxying the bytes.
    redirect: bool = False
    # Parts of multipart uploads; a writer buffers at most one. S3 allows 5 MiB to 5 GiB and
    # 10,000 parts, so this also bounds the largest blob (10 MiB parts: about 97 GiB).
    multipart_part_size: int = 10 * 1024 * 1024

    def validate(self) -> None:
        if not self.bucket:
            raise ConfigError("storage.s3.bucket: required with storage.driver s3")
        if not _BUCKET_RE.match(self.bucket):
            raise ConfigError(
                f"storage.s3.bucket: {self.bucket!r} is not a bucket name "
                "(3-63 of a-z, 0-9, '.', '-')"
            )
        if any(p in (".", "..") for p in self.prefix.split("/")):
            raise ConfigError("storage.s3.prefix: no '.' or '..' components")
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"storage.s3.endpoint_url: {self.endpoint_url!r} is not an http(s) URL"
            )
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ConfigError(
                "storage.s3.access_key_id and secret_access_key: give both or neither"
            )
        if not 5 * 1024 * 1024 <= self.multipart_part_size <= 5 * 1024 * 1024 * 1024:
            raise ConfigError("storage.s3.multipart_part_size: between 5 MiB and 5 GiB, in bytes")


@dataclass
class StorageConfig:
    """Where blobs, manifests and uploads live: `filesystem` (under data_dir) or `s3`."""

    driver: str = "filesystem"
    s3: S3Config = field(default_factory=S3Config)

    def validate(self) -> None:
        if self.driver not in STORAGE_DRIVERS:
            raise ConfigError(f"storage.driver: one of {', '.join(STORAGE_DRIVERS)}")
        if self.driver == "s3":
            self.s3.validate()


@dataclass
class TLSConfig:
    """HTTPS on the OCI API; off while no certificate is set."""

    # PEM: the certificate with its chain, and its unencrypted key.
    cert: str = ""
    key: str = ""
    # Clients must show a certificate signed by this CA bundle ("require"), or may ("optional");
    # a verified certificate's common name identifies the caller to the access rules.
    client_ca: str = ""
    client_auth: str = "require"
    min_version: str = "1.2"
    # Seconds between checks of the files' modification times (renewals load in place).
    reload_interval: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key)

    def validate(self) -> None:
        from nimbus.tls.server import CLIENT_AUTH, MIN_VERSIONS

        if self.enabled and not (self.cert and self.key):
            raise ConfigError("tls.cert and tls.key: give both")
        if self.client_ca and not self.enabled:
            raise ConfigError("tls.client_ca: needs tls.cert and tls.key")
        if self.min_version not in MIN_VERSIONS:
            raise ConfigError(f"tls.min_version: one of {', '.join(MIN_VERSIONS)}")
        if self.client_auth not in CLIENT_AUTH:
            raise ConfigError(f"tls.client_auth: one of {', '.join(CLIENT_AUTH)}")
        if self.reload_interval <= 0:
            raise ConfigError("tls.reload_interval: seconds, above 0")

    def server(self) -> ServerTLS:
        from nimbus.tls.server import ServerTLS

        return ServerTLS(self.cert, self.key, self.client_ca, self.client_auth, self.min_version)


_UPSTREAM_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass
class UpstreamConfig:
    """One registry this one mirrors (pull-through cache): where it is and what it serves."""

    name: str = ""
    url: str = ""
    # Repository names under this prefix come from here, without it: with `docker.io`,
    # `docker.io/library/nginx` is `library/nginx` upstream. Empty: reached only as the
    # default upstream or by containerd's `?ns=` (which matches a prefix or the URL's host).
    prefix: str = ""
    # Basic credentials (also exchanged for tokens by the Docker token flow), or a fixed token.
    username: str = ""
    password: str = ""
    token: str = ""
    # PEM CA bundle that the upstream's certificate must chain to (default: the system's).
    ca_bundle: str = ""
    # Seconds a cached tag is served before it is revalidated upstream with a HEAD.
    tag_ttl: float = 300.0
    # Seconds to connect and to wait for each read; past it the upstream counts as down.
    timeout: float = 30.0
    # Globs of the upstream-side repository names served (empty: all); `*` is one component,
    # `**` any. Names not served stay local repositories.
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def validate(self, key: str) -> None:
        from registry.reference import NAME_RE

        if not _UPSTREAM_NAME_RE.match(self.name):
            raise ConfigError(f"{key}.name: required; a-z, 0-9, '-' and '_', at most 63")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ConfigError(f"{key}.url: an http(s) URL, got {self.url!r}")
        if self.prefix and not NAME_RE.match(self.prefix):
            raise ConfigError(
                f"{key}.prefix: {self.prefix!r} is not a repository name prefix "
                "(lowercase components such as docker.io or mirror/hub)"
            )
        if self.password and not self.username:
            raise ConfigError(f"{key}.username: required with a password")
        if self.token and self.username:
            raise ConfigError(f"{key}.token: give a token or a username and password, not both")
        if self.ca_bundle:
            try:
                with open(self.ca_bundle, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(
                    f"{key}.ca_bundle: cannot read {self.ca_bundle}: {exc.strerror}"
                ) from None
        if self.tag_ttl < 0:
            raise ConfigError(f"{key}.tag_ttl: 0 or more seconds")
        if not 0 < self.timeout <= 600:
            raise ConfigError(f"{key}.timeout: seconds, above 0 and at most 600")
        for glob_key, globs in (("include", self.include), ("exclude", self.exclude)):
            for glob in globs:
                if not glob or glob.startswith("/") or " " in glob:
                    raise ConfigError(f"{key}.{glob_key}: {glob!r} is not a repository glob")


@dataclass
class ProxyConfig:
    """Pull-through cache of upstream registries; off while no upstream is configured."""

    upstreams: list[UpstreamConfig] = field(default_factory=list)
    # The upstream of names under no prefix (docker's `--registry-mirror` asks for
    # `library/nginx` as it would Docker Hub); empty: such names are local repositories.
    default: str = ""
    # Bytes of cached content kept (0: no bound); past it the least recently used cached
    # blobs and manifests go. Pushed content is never evicted and does not count.
    max_bytes: int = 0
    # Seconds a cached tag is kept without a pull (0: forever); then the tag goes and its
    # content ages out under max_bytes or in garbage collection.
    tag_max_idle: float = 0.0
    # Seconds between eviction sweeps (one worker sweeps at a time).
    evict_interval: float = 60.0
    # Seconds between writes of what was pulled (last use is kept in memory meanwhile: a
    # crash forgets at most this much, making those items look older to eviction).
    usage_flush_interval: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.upstreams)

    def validate(self) -> None:
        if self.max_bytes < 0 or self.tag_max_idle < 0:
            raise ConfigError("proxy.max_bytes and proxy.tag_max_idle: 0 (off) or more")
        if self.evict_interval <= 0 or self.usage_flush_interval <= 0:
            raise ConfigError("proxy.evict_interval and proxy.usage_flush_interval: above 0")
        names: set[str] = set()
        prefixes: set[str] = set()
        for i, upstream in enumerate(self.upstreams):
            key = f"proxy.upstreams[{i}]"
            upstream.validate(key)
            if upstream.name in names:
                raise ConfigError(f"{key}.name: {upstream.name!r} is used twice")
            names.add(upstream.name)
            if upstream.prefix and upstream.prefix in prefixes:
                raise ConfigError(f"{key}.prefix: {upstream.prefix!r} is used twice")
            prefixes.add(upstream.prefix)
        if self.default and self.default not in names:
            raise ConfigError(f"proxy.default: {self.default!r} names no upstream")


@dataclass
class LifecycleConfig:
    """Immutable tags, quotas and retention (registry/lifecycle). The rules in `policies` seed
    the copy kept in storage when it holds none; after that the stored rules (edited over
    gRPC) win."""

    # {immutable: [...], quotas: [...], retention: [...]}; see the README's Lifecycle section.
    policies: dict[str, Any] = field(default_factory=dict)
    # Seconds a replica reuses the stored rules before reading them again.
    reload_interval: float = 5.0
    # Seconds between writes of pull times (a crash loses at most this much of them).
    pull_flush_interval: float = 60.0
    # Seconds between scheduled retention runs; 0: only on demand.
    retention_interval: float = 0.0
    # Seconds a retention run holds its lease in storage without renewing it.
    lease_ttl: float = 60.0
    # When the integrity scrub runs by itself: an interval ("1d") or a cron expression
    # ("0 4 * * sun", UTC); empty: only on demand.
    scrub_schedule: str = ""
    # Bytes per second the scrub reads back at most; 0: no limit.
    scrub_rate: int = 50_000_000

    def validate(self) -> None:
        from registry.lifecycle.rules import Policies
        from registry.lifecycle.values import PolicyError

        try:
            Policies.parse(self.policies or None)
        except PolicyError as exc:
            raise ConfigError(str(exc)) from None
        if self.reload_interval < 0 or self.pull_flush_interval < 0:
            raise ConfigError("lifecycle.reload_interval, pull_flush_interval: 0 or more seconds")
        if self.retention_interval < 0:
            raise ConfigError("lifecycle.retention_interval: 0 (off) or more seconds")
        if self.lease_ttl < 1:
            raise ConfigError("lifecycle.lease_ttl: at least 1 second")
        if self.scrub_rate < 0:
            raise ConfigError("lifecycle.scrub_rate: 0 (no limit) or more bytes per second")
        if self.scrub_schedule:
            from registry.lifecycle.schedule import parse_schedule

            try:
                parse_schedule(self.scrub_schedule, "lifecycle.scrub_schedule")
            except PolicyError as exc:
                raise ConfigError(str(exc)) from None


@dataclass
class RegistryConfig:
    listen: str = "127.0.0.1:5000"
    data_dir: str = "./data"
    workers: int = 1
    log_level: str = "info"
    access_log: bool = True
    catalog_page_size: int = 1000
    # How long a tag or manifest lookup is reused. Negative (the default) means automatic: on
    # (1 s) when this process is the only writer (one worker, filesystem storage), where writes
    # keep the cache exact; off when other workers or replicas write, so every read sees the
    # last write. A positive value with several writers trades that for speed.
    link_cache_ttl: float = -1.0
    # The standard loop has zero-copy sendfile for blobs; see nimbus/eventloop.py.
    event_loop: str = "asyncio"
    events: EventsConfig = field(default_factory=EventsConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    # Take the scheme and host of URLs handed out from X-Forwarded-Proto/-Host (behind a
    # proxy that sets them; off, since any client could send them).
    trust_forwarded_headers: bool = False
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    # The gRPC admin API (nimbus.v1.Registry, health, reflection); "" turns it off.
    grpc_listen: str = "127.0.0.1:50051"
    # When set, every gRPC call needs `authorization: Bearer <token>` (NIMBUS_ADMIN_TOKEN).
    admin_token: str = ""
    grpc_tls_cert: str = ""
    grpc_tls_key: str = ""
    # Garbage collection keeps unreferenced blobs younger than this (seconds), so pushes in
    # progress are safe, and removes upload sessions idle for longer than gc_upload_max_age.
    gc_grace: float = 3600.0
    gc_upload_max_age: float = 24 * 3600.0

    def validate(self) -> None:
        split_hostport(self.listen, "listen")
        if self.grpc_listen:
            self.grpc().validate("grpc")
        if self.gc_grace < 0 or self.gc_upload_max_age < 0:
            raise ConfigError("gc_grace and gc_upload_max_age: 0 or more seconds")
        if self.workers < 1:
            raise ConfigError("workers: must be at least 1")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level: one of debug, info, warning, error")
        if not 1 <= self.catalog_page_size <= 10_000:
            raise ConfigError("catalog_page_size: between 1 and 10000")
        if self.event_loop not in LOOPS:
            raise ConfigError(f"event_loop: one of {', '.join(LOOPS)}")
        self.events.validate()
        self.tls.validate()
        self.storage.validate()
        if self.link_cache_ttl < 0:
            sole_writer = self.workers == 1 and self.storage.driver == "filesystem"
            self.link_cache_ttl = 1.0 if sole_writer else 0.0
        self.auth.validate()
        self.proxy.validate()
        self.lifecycle.validate()

    def grpc(self) -> GrpcServerConfig:
        return GrpcServerConfig(
            self.grpc_listen,
            admin_token=self.admin_token,
            tls_cert=self.grpc_tls_cert,
            tls_key=self.grpc_tls_key,
            reuse_port=self.workers > 1,
        )

    @property
    def host(self) -> str:
        return split_hostport(self.listen, "listen")[0]

    @property
    def port(self) -> int:
        return split_hostport(self.listen, "listen")[1]
