"""Docker token authentication: the challenge, the built-in token endpoint, and forged tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nimbus.oci.mediatypes import OCTET_STREAM
from tests.auth.conftest import USERS, RawClient
from tests.auth.skopeo import skopeo_login, skopeo_pull, skopeo_push
from tests.auth.tokens import (
    basic,
    bearer,
    claims_of,
    get_token,
    post_form,
    registry_key,
    repository_access,
    sign,
)
from tests.fixtures.images import OCILayout, make_image
from tests.fixtures.registry import RegistryProcess
from tests.registry.oci_client import OCIClient, Reply

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


async def token_for(client: OCIClient, user: str | None, *scopes: str) -> str:
    reply = await get_token(client, list(scopes), user, USERS.get(user or "", ""))
    assert reply.status == 200, reply.body
    return str(reply.json()["token"])


async def test_challenge_names_the_token_endpoint_service_and_scope(
    token_registry: RegistryProcess, raw: RawClient
) -> None:
    anonymous = raw(token_registry)
    realm = f"{token_registry.url}/auth/token"
    reply = await anonymous.request("GET", "/v2/")
    assert reply.status == 401
    assert reply.challenge() == {"scheme": "bearer", "realm": realm, "service": "nimbus-registry"}
    reply = await anonymous.request("GET", "/v2/team/app/manifests/v1")
    assert reply.status == 401
    assert reply.error_codes == ["UNAUTHORIZED"]
    assert reply.challenge() == {
        "scheme": "bearer",
        "realm": realm,
        "service": "nimbus-registry",
        "scope": "repository:team/app:pull",
    }
    upload = await anonymous.request("POST", "/v2/team/app/blobs/uploads/")
    assert upload.challenge()["scope"] == "repository:team/app:pull,push"
    delete = await anonymous.request("DELETE", "/v2/team/app/manifests/v1")
    assert delete.challenge()["scope"] == "repository:team/app:delete"
    # The catalog is open to anonymous callers here (anonymous rules exist), filtered.
    catalog = await anonymous.request("GET", "/v2/_catalog")
    assert catalog.status == 200
    assert all(name.startswith("public/") for name in catalog.json()["repositories"])


async def follow_challenge(client: OCIClient, reply: Reply, user: str) -> str:
    """What a client does with a 401: ask the realm for the challenge's scope, with Basic."""
    challenge = reply.challenge()
    assert challenge["scheme"] == "bearer"
    query = f"?service={challenge['service']}&scope={challenge['scope']}"
    login = client.authorized(basic(user, USERS[user]))
    got = await login.request("GET", challenge["realm"] + query)
    assert got.status == 200, got.body
    assert got.headers["Cache-Control"] == "no-store"
    return str(got.json()["token"])


async def test_push_and_pull_through_the_token_flow_over_http(
    token_registry: RegistryProcess, raw: RawClient
) -> None:
    anonymous = raw(token_registry)
    image = make_image((1024, 2048), seed=71)
    config = image.config
    first = await anonymous.request(
        "POST",
        f"/v2/team/flow/blobs/uploads/?digest={config.digest}",
        data=config.data,
        headers={"Content-Type": OCTET_STREAM},
    )
    assert first.status == 401
    token = await follow_challenge(anonymous, first, "bob")
    claims = claims_of(token)
    assert claims["sub"] == "bob"
    assert claims["aud"] == "nimbus-registry"
    assert claims["iss"] == "nimbus"
    assert claims["exp"] - claims["iat"] == 300
    assert claims["access"] == repository_access("team/flow", "pull", "push")
    # Every upload answers 201 and the manifest PUT 201 with its digest.
    await anonymous.authorized(bearer(token)).push_image("team/flow", image, "v1")

    pull = await anonymous.manifest("team/flow", "v1")
    assert pull.status == 401
    token = await follow_challenge(anonymous, pull, "alice")
    assert claims_of(token)["access"] == repository_access("team/flow", "pull")
    alice = anonymous.authorized(bearer(token))
    got = await alice.manifest("team/flow", "v1")
    assert got.status == 200
    assert got.body == image.manifest.data
    layer = await alice.blob("team/flow", image.layers[0].digest)
    assert layer.status == 200
    assert layer.body == image.layers[0].data


async def test_token_carries_only_the_actions_the_rules_allow(
    token_registry: RegistryProcess, raw: RawClient
) -> None:
    client = raw(token_registry)
    reply = await get_token(
        client,
        [
            "repository:team/app:pull,push,delete",
            "repository:alice/app:*",
            "repository:carol/app:pull",
            "registry:catalog:*",
            "not-a-scope",
            "repository:Bad Name:pull",
        ],
        "alice",
        USERS["alice"],
    )
    assert reply.status == 200
    body = reply.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert claims_of(body["token"])["access"] == [
        *repository_access("team/app", "pull"),
        *repository_access("alice/app", "pull", "push", "delete"),
        *repository_access("carol/app"),
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    anonymous = await get_token(client, ["repository:public/x:pull,push", "registry:catalog:*"])
    assert anonymous.status == 200
    claims = claims_of(anonymous.json()["token"])
    assert claims["sub"] == ""
    assert claims["access"] == repository_access("public/x", "pull")
    wrong = await get_token(client, ["repository:team/app:pull"], "alice", "wrong")
    assert wrong.status == 401
    assert wrong.challenge()["scheme"] == "basic"
    other = await get_token(client, ["repository:team/app:pull"], service="elsewhere")
    assert other.status == 403


def test_skopeo_follows_the_token_flow(
    token_registry: RegistryProcess, layout: OCILayout, tmp_path: Path
) -> None:
    authfiles = {}
    for user in ("alice", "bob"):
        authfiles[user] = tmp_path / f"{user}.json"
        login = skopeo_login(token_registry, authfiles[user], user, USERS[user])
        assert login.returncode == 0, login.stderr
    assert skopeo_login(token_registry, tmp_path / "x.json", "bob", "wrong").returncode != 0

    def push(user: str, ref: str) -> str:
        result = skopeo_push(
            layout.ref("v1"), token_registry, ref, "--authfile", str(authfiles[user])
        )
        return "ok" if result.returncode == 0 else result.stderr.lower()

    assert push("bob", "team/sk:v1") == "ok"
    assert push("alice", "alice/sk:v1") == "ok"
    assert push("alice", "public/sk:v1") == "ok"
    refused = push("alice", "team/sk:v2")
    assert "denied" in refused or "403" in refused
    pulled = skopeo_pull(
        token_registry,
        "team/sk:v1",
        f"oci:{tmp_path / 'a'}:v1",
        "--authfile",
        str(authfiles["alice"]),
    )
    assert pulled.returncode == 0, pulled.stderr
    assert '"path": "/auth/token"' in token_registry.log_text()  # skopeo did fetch tokens
    # Anonymous: skopeo fetches an anonymous token, which covers public/** only.
    empty = tmp_path / "empty.json"
    empty.write_text('{"auths": {}}')
    anon = ("--authfile", str(empty))
    pulled = skopeo_pull(token_registry, "public/sk:v1", f"oci:{tmp_path / 'b'}:v1", *anon)
    assert pulled.returncode == 0, pulled.stderr
    refused_pull = skopeo_pull(token_registry, "team/sk:v1", f"oci:{tmp_path / 'c'}:v1", *anon)
    assert refused_pull.returncode != 0


async def test_containerd_oauth2_post_form_and_refresh(
    token_registry: RegistryProcess, raw: RawClient
) -> None:
    client = raw(token_registry)
    image = make_image((512,), seed=72)
    reply = await post_form(
        client,
        {
            "grant_type": "password",
            "username": "bob",
            "password": USERS["bob"],
            "service": "nimbus-registry",
            "client_id": "containerd",
            "access_type": "offline",
            "scope": "repository:team/oauth:pull,push repository:alice/app:pull",
        },
    )
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["expires_in"] == 300
    assert body["scope"] == "repository:team/oauth:pull,push"
    assert claims_of(body["access_token"])["access"] == [
        *repository_access("team/oauth", "pull", "push"),
        *repository_access("alice/app"),
    ]
    await client.authorized(bearer(body["access_token"])).push_image("team/oauth", image, "v1")

    refresh = body["refresh_token"]
    renewed = await post_form(
        client,
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": "nimbus-registry",
            "client_id": "containerd",
            "scope": "repository:team/oauth:pull",
        },
    )
    assert renewed.status == 200, renewed.body
    assert renewed.json()["refresh_token"] == refresh
    token = renewed.json()["access_token"]
    assert claims_of(token)["sub"] == "bob"
    assert (await client.authorized(bearer(token)).manifest("team/oauth", "v1")).status == 200

    # A refresh token only buys access tokens; it is no access token itself.
    used = await client.authorized(bearer(refresh)).manifest("team/oauth", "v1")
    assert used.status == 401
    assert used.challenge()["error"] == "invalid_token"
    for fields, error in (
        ({"grant_type": "password", "username": "bob", "password": "wrong"}, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "abc.def.ghi"}, "invalid_grant"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
    ):
        bad = await post_form(client, {**fields, "service": "nimbus-registry"})
        assert bad.status == 400
        assert bad.json()["error"] == error
        assert "access_token" not in bad.json()


async def test_authenticated_but_not_allowed_is_403_denied(
    token_registry: RegistryProcess, raw: RawClient
) -> None:
    client = raw(token_registry)
    carol = await token_for(client, "carol", "repository:team/app:pull")
    assert claims_of(carol)["access"] == repository_access("team/app")
    reply = await client.authorized(bearer(carol)).request("GET", "/v2/team/app/tags/list")
    assert reply.status == 403
    assert reply.error_codes == ["DENIED"]
    # alice may pull team/*, not push there, whatever token she holds.
    alice = await token_for(client, "alice", "repository:team/app:pull,push")
    push = await client.authorized(bearer(alice)).request("POST", "/v2/team/app/blobs/uploads/")
    assert push.status == 403
    assert push.error_codes == ["DENIED"]


async def test_token_for_less_than_the_rules_allow_gets_insufficient_scope(
    token_registry: RegistryProcess, raw: RawClient
) -> None:
    client = raw(token_registry)
    token = await token_for(client, "alice", "repository:alice/a:pull")
    alice = client.authorized(bearer(token))
    assert (await alice.request("GET", "/v2/alice/a/tags/list")).status == 404
    for method, path, scope in (
        ("POST", "/v2/alice/a/blobs/uploads/", "repository:alice/a:pull,push"),
        ("GET", "/v2/alice/b/tags/list", "repository:alice/b:pull"),
    ):
        reply = await alice.request(method, path)
        assert reply.status == 401, path
        challenge = reply.challenge()
        assert challenge["error"] == "insufficient_scope"
        assert challenge["scope"] == scope


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged_tokens(registry: RegistryProcess) -> dict[str, str]:
    """Tokens that must all be refused; each would allow pulling alice/forged if accepted."""
    key = registry_key(registry)
    access = repository_access("alice/forged", "pull")
    other_key = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    genuine = sign(key, access=repository_access("alice/forged"))
    header, _, signature = genuine.split(".")
    widened = {**claims_of(genuine), "access": access}
    return {
        "expired": sign(
            key, access=access, exp=1_600_000_000, iat=1_599_999_000, nbf=1_599_999_000
        ),
        "other key": sign(other_key, access=access),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(sign_claims(access))}.",
        "other audience": sign(key, access=access, aud="another-registry"),
        "other issuer": sign(key, access=access, iss="someone-else"),
        "widened scope": f"{header}.{b64(widened)}.{signature}",
        "hmac with the public key": hmac_token(public_pem, access),
        "garbage": "not-a-jwt",
    }


def sign_claims(access: list[dict[str, object]]) -> dict[str, object]:
    return {**claims_of(sign(ec.generate_private_key(ec.SECP256R1()))), "access": access}


def hmac_token(secret: bytes, access: list[dict[str, object]]) -> str:
    """An HS256 token keyed with the public key: the classic algorithm-confusion forgery."""
    header = b64({"alg": "HS256", "typ": "JWT"})
    payload = b64(sign_claims(access))
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_forged_expired_and_foreign_tokens_are_refused(
    token_registry: RegistryProcess, raw: RawClient
) -> None:
    path = "/v2/alice/forged/tags/list"
    # The control: the same claims, properly signed, get through (to a 404: no such repository).
    good = sign(registry_key(token_registry), access=repository_access("alice/forged", "pull"))
    assert (await raw(token_registry, bearer(good)).request("GET", path)).status == 404
    for name, token in forged_tokens(token_registry).items():
        reply = await raw(token_registry, bearer(token)).request("GET", path)
        assert reply.status == 401, name
        assert reply.error_codes == ["UNAUTHORIZED"], name
        challenge = reply.challenge()
        assert challenge["error"] == "invalid_token", name
        assert token not in reply.body.decode(), name
    assert jwt.get_unverified_header(good)["alg"] == "ES256"


async def test_no_password_or_token_in_the_log(
    token_registry: RegistryProcess, raw: RawClient
) -> None:
    client = raw(token_registry)
    token = await token_for(client, "alice", "repository:alice/log:pull")
    listed = await client.authorized(bearer(token)).request("GET", "/v2/alice/log/tags/list")
    assert listed.status == 404  # let in: alice/log holds nothing
    scopes = ["repository:alice/log:pull"]
    refused = await get_token(client, scopes, "alice", "a-wrong-password")
    assert refused.status == 401
    log = token_registry.log_text()
    assert "login refused" in log
    for secret in [*USERS.values(), "a-wrong-password", token, token.split(".")[2]]:
        assert secret not in log
