"""The Replication gRPC API's domain rules and error codes, against a real replicator."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from nimbus.oci.errors import DigestMismatchError, RegistryError
from proto.nimbus.v1 import replication_pb2
from replicator.failures import FailureKind
from replicator.worker import TagDeleteUnsupportedError, failure_kind
from tests.fixtures.nats import NatsFactory
from tests.replicator.conftest import ReplicatorFactory, StubFactory, peer


async def refused(call: object, request: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request)  # type: ignore[operator]
    return caught.value


async def test_update_rules_and_error_codes(
    nats_factory: NatsFactory, replicator_factory: ReplicatorFactory, replication_api: StubFactory
) -> None:
    rep = replicator_factory(nats_factory().url, "http://127.0.0.1:9", "a")
    api = replication_api(rep.address)
    request = peer("east", "https://east.example:5000", site="east")
    request.peer.credentials.username, request.peer.credentials.password = "bot", "pw"
    created = await api.CreatePeer(request)
    assert created.credentials_kind == "basic"

    # Without a mask every field is taken, save credentials the request does not give: a peer
    # as read never shows its secrets, so writing it back keeps them.
    read = await api.GetPeer(replication_pb2.GetPeerRequest(name="east"))
    read.url = "https://east2.example:5000"
    updated = await api.UpdatePeer(replication_pb2.UpdatePeerRequest(peer=read))
    assert updated.url == "https://east2.example:5000"
    assert updated.credentials_kind == "basic"

    # A mask naming one credential field replaces that one alone.
    change = replication_pb2.Peer(name="east")
    change.credentials.username, change.credentials.password = "", ""
    cleared = await api.UpdatePeer(
        replication_pb2.UpdatePeerRequest(peer=change, update_mask=FieldMask(paths=["credentials"]))
    )
    assert cleared.credentials_kind == ""
    change.credentials.token = "tok"
    tokened = await api.UpdatePeer(
        replication_pb2.UpdatePeerRequest(
            peer=change, update_mask=FieldMask(paths=["credentials.token"])
        )
    )
    assert tokened.credentials_kind == "token"
    assert tokened.url == "https://east2.example:5000"  # untouched

    error = await refused(
        api.UpdatePeer,
        replication_pb2.UpdatePeerRequest(
            peer=replication_pb2.Peer(name="east"), update_mask=FieldMask(paths=["name"])
        ),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot update name" in (error.details() or "")
    bad_site = replication_pb2.Peer(name="east", site="a.b")
    error = await refused(
        api.UpdatePeer,
        replication_pb2.UpdatePeerRequest(peer=bad_site, update_mask=FieldMask(paths=["site"])),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await refused(
        api.UpdatePeer,
        replication_pb2.UpdatePeerRequest(peer=replication_pb2.Peer(name="west")),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

    # Names no peer can have are not found, not NATS' business (an invalid key).
    for name in ("", "bad*name", "a b"):
        error = await refused(api.GetPeer, replication_pb2.GetPeerRequest(name=name))
        assert error.code() == grpc.StatusCode.NOT_FOUND, name
    error = await refused(
        api.RetryFailure, replication_pb2.RetryFailureRequest(peer="east", id="nothing")
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no failure 'nothing'" in (error.details() or "")
    error = await refused(api.ListPeers, replication_pb2.ListPeersRequest(page_token="not-a-token"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The streaming call maps errors the same way.
    sync = api.Sync(replication_pb2.SyncRequest(peer="west"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in sync:
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_failure_kinds() -> None:
    url = "https://east.example/v2/team/app/manifests/v1"
    assert failure_kind(RegistryError(401, "PUT", url, "UNAUTHORIZED")) == FailureKind.PEER_REFUSED
    assert failure_kind(DigestMismatchError("sha256:a", "sha256:b", "blob")) == (
        FailureKind.PEER_REFUSED
    )
    assert failure_kind(TagDeleteUnsupportedError("no")) == FailureKind.PEER_REFUSED
    assert failure_kind(RegistryError(503, "PUT", url)) == FailureKind.PEER_UNREACHABLE
    assert failure_kind(aiohttp.ClientConnectionError()) == FailureKind.PEER_UNREACHABLE
    assert failure_kind(TimeoutError()) == FailureKind.PEER_UNREACHABLE
    for bug in (KeyError("digest"), TypeError("None"), ValueError("bad")):
        assert failure_kind(bug) == FailureKind.INTERNAL
