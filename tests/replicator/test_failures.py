"""Permanent errors become failure records; fixing the peer and retrying clears them.

The peer runs Nimbus with Docker token authentication, so the replicator's client goes through
the bearer-token challenge flow (401, token from the realm with Basic credentials, retry).
"""

from __future__ import annotations

from pathlib import Path

import bcrypt
import yaml
from google.protobuf.field_mask_pb2 import FieldMask

from nimbus.oci.transport import Credentials
from proto.nimbus.v1 import replication_pb2
from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.registry import RegistryFactory
from tests.replicator.conftest import (
    ClientFactory,
    ReplicatorFactory,
    StubFactory,
    assert_complete,
    eventually,
    peer,
    push_image,
)

USER, PASSWORD = "replicator", "s3cret-Pa55"


def token_auth_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)).decode()
    htpasswd = directory / "htpasswd"
    htpasswd.write_text(f"{USER}:{hashed}\n")
    auth = {
        "htpasswd": str(htpasswd),
        "access": [{"repositories": ["**"], "users": [USER], "actions": ["*"]}],
    }
    path = directory / "registry.yaml"
    path.write_text(yaml.safe_dump({"auth": auth}))
    return path


async def test_auth_failure_is_recorded_then_retried_after_the_fix(
    tmp_path: Path,
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicator_factory: ReplicatorFactory,
    replication_api: StubFactory,
    oci_client: ClientFactory,
) -> None:
    nats_url = nats_factory().url
    a = registry_factory(["--nats", nats_url, "--site", "a"])
    secure = registry_factory(
        ["--config", str(token_auth_config(tmp_path / "auth")), "--auth-token"]
    )
    api = replication_api(replicator_factory(nats_url, a.url, "a").address)
    request = peer("secure", secure.url)
    request.peer.credentials.username, request.peer.credentials.password = USER, "wrong"
    created = await api.CreatePeer(request)
    assert created.credentials_kind == "basic" and not created.credentials.password

    image = make_image((1500,), seed=71)
    await push_image(oci_client(a.url), "locked/app", "v1", image)

    async def recorded() -> replication_pb2.Failure:
        found = await api.ListFailures(replication_pb2.ListFailuresRequest(peer="secure"))
        assert len(found.failures) == 1
        return found.failures[0]

    failure = await eventually(recorded)
    assert (failure.repository, failure.reference, failure.action) == ("locked/app", "v1", "push")
    assert "401" in failure.reason
    assert failure.kind == "peer-refused"
    status = (await api.GetStatus(replication_pb2.GetStatusRequest(peer="secure"))).peers[0]
    assert status.failures == 1 and status.last_error_reason
    assert status.backlog == 0  # a permanent error does not block the queue

    fixed = replication_pb2.Peer(name="secure")
    fixed.credentials.username, fixed.credentials.password = USER, PASSWORD
    await api.UpdatePeer(
        replication_pb2.UpdatePeerRequest(peer=fixed, update_mask=FieldMask(paths=["credentials"]))
    )
    outcome = await api.RetryFailure(replication_pb2.RetryFailureRequest(peer="secure"))
    assert (outcome.retried, outcome.succeeded, list(outcome.still_failing)) == (1, 1, [])

    reader = oci_client(secure.url, credentials=Credentials(USER, PASSWORD))
    await assert_complete(reader, "locked/app", "v1", image)
    assert (await api.ListFailures(replication_pb2.ListFailuresRequest())).failures == []
    # Later pushes go through the token flow straight away.
    second = make_image((1500,), seed=72)
    await push_image(oci_client(a.url), "locked/app", "v2", second)
    await eventually(lambda: assert_complete(reader, "locked/app", "v2", second))
