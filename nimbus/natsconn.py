"""Connecting to NATS the same way in every service: several URLs, any of NATS' ways to
authenticate, TLS, and reconnecting forever (a service outlives NATS restarts)."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.errors import AuthorizationError

from nimbus.config import ConfigError

log = logging.getLogger("nimbus.nats")

Callback = Callable[[], Awaitable[None]]

# Ping often enough that a server gone silent (not closed) is noticed within half a minute.
PING_INTERVAL = 10
MAX_OUTSTANDING_PINGS = 2
RECONNECT_WAIT = 1


@dataclass(frozen=True)
class NatsOptions:
    """Where NATS is and how to prove who we are; empty fields are not used."""

    servers: list[str] = field(default_factory=list)
    # Connection name shown by the NATS monitoring endpoints.
    name: str = "nimbus"
    # A NATS credentials file (user JWT and NKey seed), as `nsc` writes it.
    creds: str = ""
    token: str = ""
    user: str = ""
    password: str = ""
    # TLS: a CA bundle to trust, and a client certificate for mutual TLS.
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    # Server name to verify when it differs from the URL's host.
    tls_hostname: str = ""
    connect_timeout: float = 2.0

    @property
    def wants_tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert) or any(
            s.startswith("tls://") for s in self.servers
        )


@dataclass
class NatsClientConfig:
    """The NATS settings of every service's configuration: URLs, authentication and TLS.

    Services inherit these fields, so they read alike everywhere (`nats`, `nats_creds`, ...,
    `NIMBUS_NATS`, `NIMBUS_NATS_CREDS` ...).
    """

    nats: list[str] = field(default_factory=list)
    # Authentication: a credentials file, a token, or a user and password (or none).
    nats_creds: str = ""
    nats_token: str = ""
    nats_user: str = ""
    nats_password: str = ""
    # TLS: CA bundle to trust; client certificate and key for mutual TLS.
    nats_tls_ca: str = ""
    nats_tls_cert: str = ""
    nats_tls_key: str = ""

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

    def validate_nats(self, prefix: str = "") -> None:
        """Check the NATS settings; ``prefix`` names their section in messages."""
        for url in self.nats:
            if "://" not in url:
                raise ConfigError(f"{prefix}nats: {url!r} is not a URL like nats://HOST:PORT")
        if self.nats_tls_key and not self.nats_tls_cert:
            raise ConfigError(f"{prefix}nats_tls_key: needs {prefix}nats_tls_cert")
        if bool(self.nats_user) != bool(self.nats_password):
            raise ConfigError(f"{prefix}nats_user and {prefix}nats_password: give both or neither")
        for key in ("nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key"):
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{prefix}{key}: no such file {path!r}")


class NatsRefused(ConfigError):
    """NATS refused the credentials: trying again cannot help, the configuration must change."""


def _refusal(options: NatsOptions, error: Exception) -> NatsRefused | None:
    if (
        not isinstance(error, AuthorizationError)
        and "authorization violation" not in str(error).lower()
    ):
        return None
    if options.creds:
        what = f"the credentials file {options.creds!r} (nats_creds)"
    elif options.token:
        what = "the token (nats_token)"
    elif options.user:
        what = f"user {options.user!r} or its password (nats_user, nats_password)"
    else:
        what = "a connection without credentials (set nats_token, nats_user or nats_creds)"
    servers = ", ".join(options.servers)
    return NatsRefused(f"NATS at {servers} refused {what}: authorization violation")


def tls_context(options: NatsOptions) -> ssl.SSLContext | None:
    """The client TLS context, or None for plain connections. Reads files: call off the loop."""
    if not options.wants_tls:
        return None
    context = ssl.create_default_context(cafile=options.tls_ca or None)
    if options.tls_cert:
        context.load_cert_chain(options.tls_cert, options.tls_key or None)
    return context


async def connect(
    options: NatsOptions,
    *,
    on_disconnect: Callback | None = None,
    on_reconnect: Callback | None = None,
) -> Client:
    """Connect, retrying until a server answers; afterwards the client reconnects by itself.

    Run it as a task when the service must work before NATS is up. Credentials that a server
    refuses raise NatsRefused at once, rather than being tried forever.
    """
    if not options.servers:
        raise ValueError("no NATS server URL given")
    context = await asyncio.to_thread(tls_context, options)
    failures = 0
    connecting = True

    async def error_cb(exc: Exception) -> None:
        nonlocal failures
        refused = _refusal(options, exc) if connecting else None
        if refused is not None:
            # Raised inside the client's connect loop, this ends it.
            raise refused from None
        failures += 1
        # Every attempt fails alike while NATS is away: say it on the first and now and then.
        if failures == 1 or failures % 30 == 0:
            log.warning("NATS connection error", extra={"error": repr(exc), "attempts": failures})

    async def disconnected_cb() -> None:
        if nc.is_closed:
            # Our own close, on shutdown: nothing to warn about.
            return
        log.warning("NATS disconnected", extra={"connection": options.name})
        if on_disconnect is not None:
            await on_disconnect()

    async def reconnected_cb() -> None:
        nonlocal failures
        failures = 0
        url = nc.connected_url
        log.info("NATS reconnected", extra={"server": url.netloc if url else ""})
        if on_reconnect is not None:
            await on_reconnect()

    nc = Client()
    try:
        await nc.connect(
            servers=options.servers,
            name=options.name,
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT,
            connect_timeout=max(1, round(options.connect_timeout)),
            ping_interval=PING_INTERVAL,
            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            tls=context,
            tls_hostname=options.tls_hostname or None,
            user_credentials=options.creds or None,
            token=options.token or None,
            user=options.user or None,
            password=options.password or None,
        )
    except NatsRefused:
        await nc.close()
        raise
    connecting = False
    url = nc.connected_url
    log.info(
        "NATS connected", extra={"server": url.netloc if url else "", "connection": options.name}
    )
    return nc
