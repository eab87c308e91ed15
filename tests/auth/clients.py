"""What the auth tests call with: plain HTTP (urllib), skopeo, and hand-made tokens."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nimbus.oci.transport import parse_www_authenticate
from tests.fixtures.images import Blob, Image
from tests.fixtures.registry import RegistryProcess


class Served(Protocol):
    """A registry process, ours or Distribution: what skopeo needs is its HOST:PORT."""

    @property
    def host(self) -> str: ...


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        return str(self.json()["errors"][0]["code"])

    def challenge(self) -> dict[str, str]:
        """The params of the `WWW-Authenticate` challenge, with its scheme under "scheme"."""
        header = self.headers.get("WWW-Authenticate")
        assert header, f"no challenge on a {self.status}"
        (parsed,) = parse_www_authenticate(header)
        return {"scheme": parsed.scheme, **parsed.params}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http(
    method: str,
    url: str,
    *,
    authorization: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    all_headers = dict(headers or {})
    if authorization:
        all_headers["Authorization"] = authorization
    request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


def get_token(
    registry: RegistryProcess,
    scopes: list[str],
    user: str | None = None,
    password: str = "",
    service: str = "nimbus-registry",
) -> Reply:
    query = urllib.parse.urlencode([("service", service), *(("scope", s) for s in scopes)])
    auth = basic(user, password) if user is not None else None
    return http("GET", f"{registry.url}/auth/token?{query}", authorization=auth)


def post_form(url: str, fields: dict[str, str]) -> Reply:
    body = urllib.parse.urlencode(fields).encode()
    content_type = {"Content-Type": "application/x-www-form-urlencoded"}
    return http("POST", url, body=body, headers=content_type)


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


def push_image_http(
    registry: RegistryProcess, repository: str, tag: str, image: Image, authorization: str | None
) -> Reply:
    """Monolithic blob uploads then the manifest; the first refusal is returned."""
    for blob in image.blobs:
        reply = http(
            "POST",
            f"{registry.url}/v2/{repository}/blobs/uploads/?digest={blob.digest}",
            authorization=authorization,
            body=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if reply.status != 201:
            return reply
    return put_manifest(registry, repository, tag, image.manifest, authorization)


def put_manifest(
    registry: RegistryProcess,
    repository: str,
    reference: str,
    manifest: Blob,
    authorization: str | None,
) -> Reply:
    return http(
        "PUT",
        f"{registry.url}/v2/{repository}/manifests/{reference}",
        authorization=authorization,
        body=manifest.data,
        headers={"Content-Type": manifest.media_type},
    )


def skopeo(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def skopeo_login(
    registry: RegistryProcess, authfile: Path, user: str, password: str
) -> subprocess.CompletedProcess[str]:
    return skopeo(
        "login",
        "--tls-verify=false",
        "--authfile",
        str(authfile),
        "--username",
        user,
        "--password-stdin",
        registry.host,
        stdin=password,
    )


def skopeo_push(
    source: str, registry: Served, ref: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return skopeo(
        "copy", "--dest-tls-verify=false", *extra, source, f"docker://{registry.host}/{ref}"
    )


def skopeo_pull(
    registry: Served, ref: str, dest: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return skopeo("copy", "--src-tls-verify=false", *extra, f"docker://{registry.host}/{ref}", dest)
