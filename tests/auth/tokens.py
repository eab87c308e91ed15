"""Tokens by hand: asked of the token endpoint through the raw client, decoded unverified, or
signed here with the registry's key (or another) to be refused."""

from __future__ import annotations

import base64
import time
import urllib.parse
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient, Reply

TOKEN_PATH = "/auth/token"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def get_token(
    client: OCIClient,
    scopes: list[str],
    user: str | None = None,
    password: str = "",
    service: str = "nimbus-registry",
) -> Reply:
    """The token endpoint's answer to a GET for ``scopes``, with Basic when ``user`` is given."""
    query = urllib.parse.urlencode([("service", service), *(("scope", s) for s in scopes)])
    asking = client.authorized(basic(user, password) if user is not None else None)
    return await asking.request("GET", f"{TOKEN_PATH}?{query}")


async def post_form(client: OCIClient, fields: dict[str, str]) -> Reply:
    """An OAuth2 form POST to the token endpoint, as containerd sends it."""
    return await client.authorized(None).request(
        "POST",
        TOKEN_PATH,
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def claims_of(token: str) -> dict[str, Any]:
    """A token's claims, unverified: what the registry was asked to believe."""
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def registry_key(registry: RegistryProcess) -> ec.EllipticCurvePrivateKey:
    """The signing key the registry generated in its data directory."""
    key = serialization.load_pem_private_key(
        (registry.data_dir / "auth" / "token.key").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def sign(key: Any, algorithm: str = "ES256", **overrides: Any) -> str:
    """A token like the registry's own, with ``overrides`` applied to its claims."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "nimbus",
        "sub": "alice",
        "aud": "nimbus-registry",
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "access": [],
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm=algorithm)


def repository_access(name: str, *actions: str) -> list[dict[str, Any]]:
    return [{"type": "repository", "name": name, "actions": list(actions)}]
