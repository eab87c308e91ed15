"""This registry's tokens elsewhere, and another client here: a registry trusting it as an
external issuer (by certificate, by JWKS), CNCF Distribution trusting it, the replicator's client.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jwt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from nimbus.oci.client import RegistryClient
from nimbus.oci.errors import RegistryError
from nimbus.oci.transport import Credentials
from registry.auth.tokens import libtrust_kid
from tests.auth.conftest import USERS, RawClient, start_registry
from tests.auth.skopeo import skopeo_pull, skopeo_push
from tests.auth.tokens import bearer, get_token, registry_key, repository_access, sign
from tests.fixtures.distribution import (
    DistributionProcess,
    distribution_binary,
    distribution_config,
)
from tests.fixtures.images import OCILayout, make_image
from tests.fixtures.registry import RegistryProcess, wait_http

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


def creds(user: str) -> str:
    return f"{user}:{USERS[user]}"


def certificate(issuer: RegistryProcess) -> Path:
    return issuer.data_dir / "auth" / "token.crt"


async def token_of(raw: RawClient, issuer: RegistryProcess, user: str, *scopes: str) -> str:
    reply = await get_token(raw(issuer), list(scopes), user, USERS[user])
    assert reply.status == 200
    return str(reply.json()["token"])


async def test_generated_key_survives_restarts(
    token_registry: RegistryProcess, raw: RawClient
) -> None:
    key_file = token_registry.data_dir / "auth" / "token.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(certificate(token_registry).read_bytes())
    assert cert.public_key() == registry_key(token_registry).public_key()
    token = await token_of(raw, token_registry, "alice")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == libtrust_kid(cert.public_key())
    before = key_file.read_bytes()
    token_registry.restart()
    assert key_file.read_bytes() == before
    assert (await raw(token_registry, bearer(token)).request("GET", "/v2/")).status == 200


async def test_registry_trusting_an_external_issuer_by_certificate(
    token_registry: RegistryProcess,
    layout: OCILayout,
    tmp_path_factory: pytest.TempPathFactory,
    raw: RawClient,
) -> None:
    realm = f"{token_registry.url}/auth/token"
    cert = str(certificate(token_registry))
    site = start_registry(tmp_path_factory, "--auth-token-cert", cert, "--auth-token-realm", realm)
    try:
        reply = await raw(site).manifest("team/ext", "v1")
        assert reply.status == 401
        assert reply.challenge()["realm"] == realm
        assert not (site.data_dir / "auth").exists()  # no key of its own
        pushed = skopeo_push(layout.ref("v1"), site, "team/ext:v1", "--dest-creds", creds("bob"))
        assert pushed.returncode == 0, pushed.stderr
        # The issuer granted alice only pull in team/*: the site refuses her push.
        refused = skopeo_push(layout.ref("v1"), site, "team/ext:v2", "--dest-creds", creds("alice"))
        assert refused.returncode != 0
        assert "denied" in refused.stderr.lower() or "403" in refused.stderr
        # A token signed by any other key is refused.
        other = sign(ec.generate_private_key(ec.SECP256R1()), access=repository_access("team/ext"))
        forged = await raw(site, bearer(other)).request("GET", "/v2/team/ext/tags/list")
        assert forged.status == 401
    finally:
        site.stop()


async def test_registry_trusting_an_external_issuer_by_jwks(
    token_registry: RegistryProcess, tmp_path_factory: pytest.TempPathFactory, raw: RawClient
) -> None:
    public = registry_key(token_registry).public_key()
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": libtrust_kid(public), "use": "sig"}]}))
    realm = f"{token_registry.url}/auth/token"
    site = start_registry(
        tmp_path_factory, "--auth-token-jwks", str(jwks), "--auth-token-realm", realm
    )
    try:
        path = "/v2/team/jwks/tags/list"
        token = await token_of(raw, token_registry, "alice", "repository:team/jwks:pull")
        assert (await raw(site, bearer(token)).request("GET", path)).status == 404  # let in
        wrong = await token_of(raw, token_registry, "alice", "repository:team/other:pull")
        reply = await raw(site, bearer(wrong)).request("GET", path)
        assert reply.status == 401
        assert reply.challenge()["error"] == "insufficient_scope"
        other = sign(ec.generate_private_key(ec.SECP256R1()), access=repository_access("team/jwks"))
        assert (await raw(site, bearer(other)).request("GET", path)).status == 401
    finally:
        site.stop()


class TokenAuthDistribution(DistributionProcess):
    """CNCF Distribution with this registry as its token issuer."""

    def __init__(self, work_dir: Path, issuer: RegistryProcess) -> None:
        super().__init__(work_dir)
        self.issuer = issuer

    def start(self) -> TokenAuthDistribution:
        self.root.mkdir(parents=True, exist_ok=True)
        config = distribution_config(self.root, self.port)
        config["auth"] = {
            "token": {
                "realm": f"{self.issuer.url}/auth/token",
                "service": "nimbus-registry",
                "issuer": "nimbus",
                "rootcertbundle": str(certificate(self.issuer)),
            }
        }
        self.config_path.write_text(yaml.safe_dump(config))
        proc = self.spawn([distribution_binary(), "serve", str(self.config_path)])
        wait_http(f"{self.url}/v2/", proc=proc)
        return self


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="no docker-registry")
def test_distribution_accepts_this_registrys_tokens(
    token_registry: RegistryProcess, layout: OCILayout, tmp_path: Path
) -> None:
    distribution = TokenAuthDistribution(tmp_path / "distribution", token_registry).start()
    try:
        pushed = skopeo_push(
            layout.ref("v1"), distribution, "team/dist:v1", "--dest-creds", creds("bob")
        )
        assert pushed.returncode == 0, pushed.stderr
        pulled = skopeo_pull(
            distribution,
            "team/dist:v1",
            f"oci:{tmp_path / 'out'}:v1",
            "--src-creds",
            creds("alice"),
        )
        assert pulled.returncode == 0, pulled.stderr
        refused = skopeo_push(
            layout.ref("v1"), distribution, "team/dist:v2", "--dest-creds", creds("alice")
        )
        assert refused.returncode != 0
    finally:
        distribution.stop()


async def test_replicator_client_authenticates_with_the_token_server(
    token_registry: RegistryProcess,
) -> None:
    image = make_image((2048,), seed=81)
    url = token_registry.url
    async with RegistryClient(url, Credentials("bob", USERS["bob"])) as client:
        for blob in image.blobs:
            assert await client.push_blob("team/repl", blob.data) == blob.digest
        pushed = await client.put_manifest(
            "team/repl", "v1", image.manifest.data, image.manifest.media_type
        )
        assert pushed.digest == image.digest
        manifest = await client.get_manifest("team/repl", "v1")
        assert manifest is not None
        assert manifest.data == image.manifest.data
    async with RegistryClient(url, Credentials("carol", USERS["carol"])) as client:
        with pytest.raises(RegistryError) as denied:
            await client.get_manifest("team/repl", "v1")
        assert denied.value.status == 403
    async with RegistryClient(url, Credentials("bob", "wrong")) as client:
        with pytest.raises(RegistryError) as refused:
            await client.get_manifest("team/repl", "v1")
        assert refused.value.status == 401
    async with RegistryClient(url) as client:  # anonymous
        with pytest.raises(RegistryError) as anonymous:
            await client.get_manifest("team/repl", "v1")
        assert anonymous.value.status == 401
