"""`nimbus registry`: flags of the registry service."""

from __future__ import annotations

import argparse
from typing import Any

from nimbus.config import ConfigError, load
from nimbus.serviceflags import add_grpc_arguments, add_nats_arguments, grpc_flags, nats_flags
from registry.config import RegistryConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument("--listen", help="HOST:PORT to serve the OCI API on (127.0.0.1:5000)")
    parser.add_argument("--data-dir", help="where blobs, manifests and uploads live (./data)")
    parser.add_argument("--workers", type=int, help="processes sharing the port (1)")
    parser.add_argument("--log-level", help="debug, info, warning or error")
    events = parser.add_argument_group("events (off without --nats)")
    add_nats_arguments(events)
    events.add_argument("--site", help="this site's name in events and subjects (local)")
    events.add_argument(
        "--stream-replicas",
        type=int,
        help="copies a NATS cluster keeps of the event stream, 1 to 5 (1)",
    )
    events.add_argument(
        "--publish-timeout",
        type=float,
        help="seconds a request waits for the JetStream ack before using the outbox (0.5)",
    )
    events.add_argument("--outbox-dir", help="local directory of the event outbox")
    events.add_argument(
        "--blob-events",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="emit blob upload completions (on)",
    )
    events.add_argument(
        "--pull-events",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="emit manifest pulls (off)",
    )
    admin = parser.add_argument_group("gRPC admin API")
    add_grpc_arguments(admin, "admin", '127.0.0.1:50051; "" off')
    admin.add_argument("--gc-grace", type=float, help="seconds unreferenced blobs are kept (3600)")
    admin.add_argument(
        "--gc-upload-max-age", type=float, help="seconds before idle uploads are removed (86400)"
    )
    auth = parser.add_argument_group("authentication (off unless set; rules in --config)")
    auth.add_argument("--htpasswd", help="bcrypt htpasswd file (htpasswd -B) of the users")
    auth.add_argument("--auth-realm", help="realm of the Basic challenge (nimbus)")
    auth.add_argument(
        "--auth-token",
        action="store_true",
        default=None,
        help="Bearer token mode with the built-in token endpoint /auth/token",
    )
    auth.add_argument("--auth-token-realm", help="token endpoint URL sent to clients")
    auth.add_argument("--auth-token-service", help="service (token audience) (nimbus-registry)")
    auth.add_argument("--auth-token-issuer", help="token issuer (nimbus)")
    auth.add_argument("--auth-token-key", help="PEM EC P-256 signing key of the built-in issuer")
    auth.add_argument("--auth-token-expiry", type=int, help="token lifetime in seconds (300)")
    auth.add_argument("--auth-token-cert", help="external issuer: its PEM certificate bundle")
    auth.add_argument("--auth-token-jwks", help="external issuer: its JWKS file or URL")

    proxy = parser.add_argument_group("pull-through cache (off unless an upstream is given)")
    proxy.add_argument(
        "--proxy-upstream",
        action="append",
        metavar="KEY=VALUE,...",
        help="an upstream registry to mirror, e.g. name=hub,url=https://registry-1.docker.io,"
        "prefix=docker.io,tag_ttl=300 (keys of proxy.upstreams; include= and exclude= repeat); "
        "repeat the flag for several",
    )
    proxy.add_argument("--proxy-default", help="upstream of names under no prefix (none)")
    proxy.add_argument(
        "--proxy-max-bytes", type=int, help="bytes of cached content kept, LRU beyond (0: all)"
    )
    proxy.add_argument(
        "--proxy-tag-max-idle", type=float, help="seconds a cached tag stays unpulled (0: ever)"
    )

    add_storage_arguments(parser)


_LIST_KEYS = frozenset({"include", "exclude"})


def upstream_flag(spec: str) -> dict[str, Any]:
    """One `--proxy-upstream` value as a section of proxy.upstreams."""
    section: dict[str, Any] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--proxy-upstream: expected KEY=VALUE, got {part!r}")
        if key in _LIST_KEYS:
            section.setdefault(key, []).append(value.strip())
        else:
            section[key] = value.strip()
    return section


def proxy_flags(args: argparse.Namespace) -> dict[str, Any]:
    proxy: dict[str, Any] = {}
    if args.proxy_upstream:
        proxy["upstreams"] = [upstream_flag(spec) for spec in args.proxy_upstream]
    if args.proxy_default is not None:
        proxy["default"] = args.proxy_default
    if args.proxy_max_bytes is not None:
        proxy["max_bytes"] = args.proxy_max_bytes
    if args.proxy_tag_max_idle is not None:
        proxy["tag_max_idle"] = args.proxy_tag_max_idle
    return proxy


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    tls = parser.add_argument_group("HTTPS on the OCI API (off unless --tls-cert)")
    tls.add_argument("--tls-cert", help="PEM certificate with its chain")
    tls.add_argument("--tls-key", help="PEM private key of the certificate")
    tls.add_argument("--tls-client-ca", help="PEM CA bundle that client certificates must chain to")
    tls.add_argument(
        "--tls-client-auth", choices=("require", "optional"), help="client certificates (require)"
    )
    tls.add_argument("--tls-min-version", choices=("1.2", "1.3"), help="oldest TLS version (1.2)")
    tls.add_argument(
        "--trust-forwarded-headers",
        action="store_const",
        const=True,
        help="URLs from X-Forwarded-Proto/-Host (behind a proxy that sets them)",
    )
    storage = parser.add_argument_group("storage (filesystem under --data-dir unless s3)")
    storage.add_argument("--storage", choices=("filesystem", "s3"), help="storage driver")
    storage.add_argument("--s3-bucket", help="S3 bucket")
    storage.add_argument("--s3-prefix", help="key prefix inside the bucket")
    storage.add_argument("--s3-region", help="bucket region (from the AWS configuration)")
    storage.add_argument("--s3-endpoint-url", help="URL of an S3-compatible store")
    storage.add_argument(
        "--s3-path-style",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="address the bucket in the URL path (off)",
    )
    storage.add_argument(
        "--s3-redirect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="answer blob GETs with a redirect to a presigned URL (off)",
    )
    storage.add_argument(
        "--s3-part-size", type=int, help="multipart upload part size in bytes (10 MiB)"
    )


def flags(args: argparse.Namespace) -> dict[str, Any]:
    events: dict[str, Any] = {
        **nats_flags(args),
        "site": args.site,
        "stream_replicas": args.stream_replicas,
        "publish_timeout": args.publish_timeout,
        "outbox_dir": args.outbox_dir,
        "blob_uploads": args.blob_events,
        "pulls": args.pull_events,
    }
    return {
        "listen": args.listen,
        "data_dir": args.data_dir,
        "workers": args.workers,
        "log_level": args.log_level,
        **grpc_flags(args),
        "gc_grace": args.gc_grace,
        "gc_upload_max_age": args.gc_upload_max_age,
        "events": {k: v for k, v in events.items() if v is not None},
        "storage": storage_flags(args),
        "auth": auth_flags(args),
        "tls": tls_flags(args),
        "proxy": proxy_flags(args),
        "trust_forwarded_headers": args.trust_forwarded_headers,
    }


def tls_flags(args: argparse.Namespace) -> dict[str, Any]:
    tls: dict[str, Any] = {
        "cert": args.tls_cert,
        "key": args.tls_key,
        "client_ca": args.tls_client_ca,
        "client_auth": args.tls_client_auth,
        "min_version": args.tls_min_version,
    }
    return {k: v for k, v in tls.items() if v is not None}


def auth_flags(args: argparse.Namespace) -> dict[str, Any]:
    token: dict[str, Any] = {
        "enabled": args.auth_token,
        "realm": args.auth_token_realm,
        "service": args.auth_token_service,
        "issuer": args.auth_token_issuer,
        "key": args.auth_token_key,
        "expiry": args.auth_token_expiry,
        "certificate": args.auth_token_cert,
        "jwks": args.auth_token_jwks,
    }
    auth: dict[str, Any] = {"htpasswd": args.htpasswd, "realm": args.auth_realm}
    return {
        **{k: v for k, v in auth.items() if v is not None},
        "token": {k: v for k, v in token.items() if v is not None},
    }


def storage_flags(args: argparse.Namespace) -> dict[str, Any]:
    s3: dict[str, Any] = {
        "bucket": args.s3_bucket,
        "prefix": args.s3_prefix,
        "region": args.s3_region,
        "endpoint_url": args.s3_endpoint_url,
        "path_style": args.s3_path_style,
        "redirect": args.s3_redirect,
        "multipart_part_size": args.s3_part_size,
    }
    storage: dict[str, Any] = {"s3": {k: v for k, v in s3.items() if v is not None}}
    if args.storage is not None:
        storage["driver"] = args.storage
    return storage


def main(args: argparse.Namespace) -> int:
    from registry.server import run

    config = load(RegistryConfig, args.config, flags=flags(args))
    run(config)
    return 0
