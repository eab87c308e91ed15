"""Peers: the registries a site replicates to, stored in a NATS KV bucket shared by replicas."""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from nats.js.client import JetStreamContext
from nats.js.errors import (
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from nimbus import streams
from nimbus.kvbucket import current_entries, open_bucket
from nimbus.oci.client import RegistryClient
from nimbus.oci.transport import Credentials
from nimbus.tls.client import client_context, client_pair_problems
from replicator.rules import Rule

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class PeerError(ValueError):
    """A peer definition that cannot be used; the message says why."""


class PeerNotFoundError(KeyError):
    pass


class PeerExistsError(ValueError):
    pass


@dataclass
class Peer:
    name: str
    url: str
    # The peer's Nimbus site name, when it is one: events that came from there are not sent back.
    site: str = ""
    username: str = ""
    password: str = ""
    # A fixed bearer token (or identity token for the token endpoint) instead of a password.
    token: str = ""
    tls_verify: bool = True
    # PEM of a private CA the peer's certificate chains to (kept inline: replicas run anywhere).
    ca_pem: str = ""
    # A client certificate (PEM, with its chain) and its key, for a peer that asks for one.
    client_cert_pem: str = ""
    client_key_pem: str = ""
    # Seconds between full reconciles of this peer; 0 turns them off.
    reconcile_interval: float = 0.0
    rules: list[Rule] = field(default_factory=list)
    # Unix time the peer was added: its consumer starts at the events from then on.
    created_at: float = 0.0

    def validate(self) -> None:
        if not NAME_RE.match(self.name):
            raise PeerError("peer name: lowercase letters, digits, '-' and '_', up to 63")
        if not self.url.startswith(("http://", "https://")):
            raise PeerError(f"peer url {self.url!r}: must start with http:// or https://")
        if self.token and (self.username or self.password):
            raise PeerError("peer credentials: a username and password, or a token, not both")
        if bool(self.username) != bool(self.password):
            raise PeerError("peer credentials: give both username and password")
        if self.reconcile_interval < 0:
            raise PeerError("reconcile_interval: 0 (off) or a number of seconds")
        if self.ca_pem and "BEGIN CERTIFICATE" not in self.ca_pem:
            raise PeerError("ca_pem: not a PEM certificate")
        problems = client_pair_problems(
            self.client_cert_pem, self.client_key_pem, "client_cert_pem", "client_key_pem"
        )
        if problems:
            raise PeerError("; ".join(problems))
        if self.site and any(c in self.site for c in ".*> "):
            raise PeerError(f"peer site {self.site!r}: not a site name")
        for rule in self.rules:
            try:
                rule.validate()
            except ValueError as error:
                raise PeerError(str(error)) from None

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.username, self.password, self.token)

    def ssl(self) -> ssl.SSLContext:
        """Verifying the peer (the system's CAs, or its private CA) unless it is explicitly
        `tls_insecure`, and presenting the client certificate when it asks for one."""
        return client_context(
            self.ca_pem, self.client_cert_pem, self.client_key_pem, verify=self.tls_verify
        )

    def client(self, **kwargs: Any) -> RegistryClient:
        return RegistryClient(self.url, self.credentials, ssl=self.ssl(), **kwargs)

    def to_json(self) -> bytes:
        doc = {
            "name": self.name,
            "url": self.url,
            "site": self.site,
            "username": self.username,
            "password": self.password,
            "token": self.token,
            "tls_verify": self.tls_verify,
            "ca_pem": self.ca_pem,
            "client_cert_pem": self.client_cert_pem,
            "client_key_pem": self.client_key_pem,
            "reconcile_interval": self.reconcile_interval,
            "rules": [rule.to_dict() for rule in self.rules],
            "created_at": self.created_at,
        }
        return json.dumps(doc).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Peer:
        raw = json.loads(data)
        return cls(
            name=str(raw["name"]),
            url=str(raw["url"]),
            site=str(raw.get("site", "")),
            username=str(raw.get("username", "")),
            password=str(raw.get("password", "")),
            token=str(raw.get("token", "")),
            tls_verify=bool(raw.get("tls_verify", True)),
            ca_pem=str(raw.get("ca_pem", "")),
            client_cert_pem=str(raw.get("client_cert_pem", "")),
            client_key_pem=str(raw.get("client_key_pem", "")),
            reconcile_interval=float(raw.get("reconcile_interval", 0.0)),
            rules=[Rule.from_dict(r) for r in raw.get("rules") or []],
            created_at=float(raw.get("created_at", 0.0)),
        )


class PeerStore:
    """CRUD over the peers bucket; the key is the peer's name."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, site: str, replicas: int = 1) -> PeerStore:
        bucket = streams.site_bucket(streams.PEERS_BUCKET, site)
        return cls(await open_bucket(js, bucket, replicas=replicas))

    async def get(self, name: str) -> Peer:
        try:
            entry = await self.kv.get(name)
        except KeyNotFoundError:
            raise PeerNotFoundError(name) from None
        if entry.value is None:
            raise PeerNotFoundError(name)
        return Peer.from_json(entry.value)

    async def list(self) -> list[Peer]:
        # Not `kv.keys()`: its watch can report the end before every key has arrived.
        entries = await current_entries(self.kv)
        return sorted((Peer.from_json(e.value) for e in entries if e.value), key=_name)

    async def create(self, peer: Peer) -> Peer:
        peer.validate()
        try:
            await self.kv.create(peer.name, peer.to_json())
        except KeyWrongLastSequenceError:
            raise PeerExistsError(peer.name) from None
        return peer

    async def put(self, peer: Peer) -> Peer:
        peer.validate()
        await self.kv.put(peer.name, peer.to_json())
        return peer

    async def delete(self, name: str) -> None:
        await self.get(name)
        await self.kv.delete(name)


def _name(peer: Peer) -> str:
    return peer.name
