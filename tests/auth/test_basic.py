"""Basic authentication against a bcrypt htpasswd file, and the access rules, with skopeo."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from tests.auth.conftest import USERS, RawClient, client_of, push_image
from tests.auth.skopeo import skopeo_login, skopeo_pull, skopeo_push
from tests.auth.tokens import basic
from tests.fixtures.images import Image, OCILayout, make_blob, make_image
from tests.fixtures.registry import RegistryProcess

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


def creds(user: str) -> str:
    return f"{user}:{USERS[user]}"


def auth(user: str) -> str:
    return basic(user, USERS[user])


def forbidden(stderr: str) -> bool:
    """skopeo's words for a 403: the error body's `denied`, or the bare status of a HEAD."""
    return "denied" in stderr.lower() or "403 (forbidden)" in stderr.lower()


async def test_missing_or_wrong_credentials_get_the_basic_challenge(
    basic_registry: RegistryProcess, raw: RawClient
) -> None:
    for authorization in (None, basic("alice", "wrong"), basic("nobody", "x"), "Basic !!!"):
        reply = await raw(basic_registry, authorization).request("GET", "/v2/")
        assert reply.status == 401, authorization
        assert reply.error_codes == ["UNAUTHORIZED"]
        assert reply.challenge() == {"scheme": "basic", "realm": "nimbus", "charset": "UTF-8"}
    # A bearer token means nothing to a Basic registry.
    reply = await raw(basic_registry, "Bearer abc.def.ghi").request("GET", "/v2/")
    assert reply.status == 401
    assert reply.challenge()["scheme"] == "basic"
    assert (await raw(basic_registry, auth("alice")).request("GET", "/v2/")).status == 200
    # A user without any rule still logs in (`docker login` works), then may do nothing.
    assert (await raw(basic_registry, auth("carol")).request("GET", "/v2/")).status == 200


def test_skopeo_login(basic_registry: RegistryProcess, tmp_path: Path) -> None:
    authfile = tmp_path / "auth.json"
    good = skopeo_login(basic_registry, authfile, "alice", USERS["alice"])
    assert good.returncode == 0, good.stderr
    assert "Login Succeeded" in good.stdout
    stored = json.loads(authfile.read_text())["auths"][basic_registry.host]["auth"]
    assert base64.b64decode(stored).decode() == creds("alice")

    other = tmp_path / "other.json"
    bad = skopeo_login(basic_registry, other, "alice", "not-her-password")
    assert bad.returncode != 0
    assert "invalid username/password" in bad.stderr
    assert not other.exists() or basic_registry.host not in other.read_text()


async def test_push_and_pull_allowed_and_denied_per_rule(
    basic_registry: RegistryProcess, layout: OCILayout, tmp_path: Path
) -> None:
    authfiles = {}
    for user in ("alice", "bob", "carol"):
        authfiles[user] = tmp_path / f"{user}.json"
        assert skopeo_login(basic_registry, authfiles[user], user, USERS[user]).returncode == 0

    def push(user: str, ref: str) -> str:
        result = skopeo_push(
            layout.ref("v1"), basic_registry, ref, "--authfile", str(authfiles[user])
        )
        return "ok" if result.returncode == 0 else result.stderr.lower()

    def pull(user: str, ref: str) -> str:
        slug = ref.replace("/", "-").replace(":", "-")
        dest = f"oci:{tmp_path / f'pulled-{user}-{slug}'}:v1"
        result = skopeo_pull(basic_registry, ref, dest, "--authfile", str(authfiles[user]))
        return "ok" if result.returncode == 0 else result.stderr.lower()

    assert push("alice", "alice/app:v1") == "ok"
    assert push("bob", "team/app:v1") == "ok"
    assert forbidden(push("alice", "team/app:v2"))  # alice may only pull in team/*
    assert forbidden(push("bob", "alice/app:v2"))
    assert forbidden(push("carol", "carol/app:v1"))  # logged in, but no rule
    assert pull("alice", "team/app:v1") == "ok"
    assert pull("bob", "team/app:v1") == "ok"
    assert forbidden(pull("bob", "alice/app:v1"))
    assert forbidden(pull("carol", "team/app:v1"))

    # Credentials given on the command line instead of a login.
    image = layout.tags["v1"]
    assert isinstance(image, Image)
    result = skopeo_push(
        layout.ref("v1"), basic_registry, "team/creds:v1", "--dest-creds", creds("bob")
    )
    assert result.returncode == 0, result.stderr
    async with client_of(basic_registry, "bob") as bob:
        got = await bob.get_manifest("team/creds", "v1")  # checked against its digest header
    assert got is not None
    assert got.digest == image.digest
    assert got.data == image.manifest.data
    denied = skopeo_pull(
        basic_registry, "alice/app:v1", f"oci:{tmp_path / 'c'}:v1", "--src-creds", creds("carol")
    )
    assert denied.returncode != 0
    assert forbidden(denied.stderr)


async def test_anonymous_pull_only_where_allowed(
    basic_registry: RegistryProcess, layout: OCILayout, tmp_path: Path, raw: RawClient
) -> None:
    pushed = skopeo_push(
        layout.ref("v1"), basic_registry, "public/base:v1", "--dest-creds", creds("alice")
    )
    assert pushed.returncode == 0, pushed.stderr
    empty = tmp_path / "empty.json"
    empty.write_text('{"auths": {}}')
    anon = ("--authfile", str(empty))

    pulled = skopeo_pull(basic_registry, "public/base:v1", f"oci:{tmp_path / 'p'}:v1", *anon)
    assert pulled.returncode == 0, pulled.stderr
    refused = skopeo_pull(basic_registry, "alice/app:v1", f"oci:{tmp_path / 'q'}:v1", *anon)
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "401" in refused.stderr
    refused = skopeo_push(layout.ref("v1"), basic_registry, "public/base:v2", *anon)
    assert refused.returncode != 0

    image = layout.tags["v1"]
    assert isinstance(image, Image)
    anonymous = raw(basic_registry)
    assert (await anonymous.manifest("public/base", "v1")).status == 200
    layer = await anonymous.request("HEAD", f"/v2/public/base/blobs/{image.layers[0].digest}")
    assert layer.status == 200
    for method, path in (
        ("GET", "/v2/alice/app/manifests/v1"),
        ("POST", "/v2/public/base/blobs/uploads/"),
        ("DELETE", f"/v2/public/base/manifests/{image.digest}"),
    ):
        reply = await anonymous.request(method, path)
        assert reply.status == 401, path
        assert reply.challenge()["scheme"] == "basic"


async def test_authenticated_but_not_allowed_is_403_denied(
    basic_registry: RegistryProcess, raw: RawClient
) -> None:
    image = make_image((512,), seed=62)
    await push_image(basic_registry, "bob", "team/del", "v1", image)
    carol, bob, alice = (raw(basic_registry, auth(user)) for user in ("carol", "bob", "alice"))
    reply = await carol.request("GET", "/v2/team/del/tags/list")
    assert reply.status == 403
    assert reply.error_codes == ["DENIED"]
    assert reply.json()["errors"][0]["detail"] == [
        {"Type": "repository", "Name": "team/del", "Action": "pull"}
    ]
    assert "WWW-Authenticate" not in reply.headers
    # bob may push in team/* but not delete.
    manifest = f"/v2/team/del/manifests/{image.digest}"
    assert (await bob.request("DELETE", manifest)).status == 403
    assert (await bob.request("GET", manifest)).status == 200
    # alice may delete in her own repositories.
    await push_image(basic_registry, "alice", "alice/del", "v1", image)
    own = f"/v2/alice/del/manifests/{image.digest}"
    assert (await alice.request("DELETE", own)).status == 202
    assert (await alice.request("GET", own)).status == 404


async def test_catalog_lists_only_what_the_caller_may_pull(
    basic_registry: RegistryProcess, raw: RawClient
) -> None:
    image = make_image((256,), seed=63)
    for user, repo in (("alice", "alice/cat"), ("alice", "public/cat"), ("bob", "team/cat")):
        await push_image(basic_registry, user, repo, "v1", image)

    async def catalog(authorization: str | None, n: int | None = None) -> list[str]:
        names: list[str] = []
        path = "/v2/_catalog" + (f"?n={n}" if n else "")
        while path:
            reply = await raw(basic_registry, authorization).request("GET", path)
            assert reply.status == 200, reply.body
            names += reply.json()["repositories"]
            link = reply.headers.get("Link")
            path = link[1 : link.index(">")] if link else ""
        return names

    alice = await catalog(auth("alice"))
    assert {"alice/cat", "public/cat", "team/cat"} <= set(alice)
    assert await catalog(auth("alice"), n=1) == alice  # pages hold only visible names
    bob = await catalog(auth("bob"))
    assert {"team/cat", "public/cat"} <= set(bob)
    assert not [name for name in bob if name.startswith("alice/")]
    assert all(name.startswith("public/") for name in await catalog(auth("carol")))
    anonymous = await catalog(None)
    assert "public/cat" in anonymous
    assert all(name.startswith("public/") for name in anonymous)


async def test_mount_only_from_a_repository_the_caller_may_pull(
    basic_registry: RegistryProcess, raw: RawClient
) -> None:
    blob = make_blob(2048, seed=64)
    async with client_of(basic_registry, "alice") as alice:
        for repo in ("alice/secret", "public/shared"):
            assert await alice.push_blob(repo, blob.data) == blob.digest
    bob = raw(basic_registry, auth("bob"))

    async def mount(source: str) -> int:
        path = f"/v2/team/mnt/blobs/uploads/?mount={blob.digest}&from={source}"
        return (await bob.request("POST", path)).status

    # bob cannot read alice/secret: no mount, an ordinary upload session instead.
    assert await mount("alice/secret") == 202
    blob_path = f"/v2/team/mnt/blobs/{blob.digest}"
    assert (await bob.request("HEAD", blob_path)).status == 404
    assert await mount("public/shared") == 201
    assert (await bob.request("HEAD", blob_path)).status == 200


async def test_no_password_or_authorization_header_in_the_log(
    basic_registry: RegistryProcess, raw: RawClient
) -> None:
    wrong = await raw(basic_registry, basic("alice", "a-wrong-password")).request("GET", "/v2/")
    assert wrong.status == 401
    assert (await raw(basic_registry, auth("bob")).request("GET", "/v2/")).status == 200
    log = basic_registry.log_text()
    assert "login refused" in log  # the log is written, and failures are in it
    for secret in [*USERS.values(), "a-wrong-password"]:
        assert secret not in log
        assert base64.b64encode(secret.encode()).decode()[:12] not in log
    for user in USERS:
        assert auth(user).split()[1] not in log
