"""Listing peers reads every one of them, even while others are being written: the listing is
what the replicator starts and stops peer workers by, so a peer missing from one listing had
its worker stopped and a sync of it refused as "not found"."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from proto.nimbus.v1 import replication_pb2
from tests.fixtures.nats import NatsFactory
from tests.replicator.conftest import ReplicatorFactory, StubFactory, peer

PEERS = 40


async def test_every_listing_has_every_peer_while_peers_are_updated(
    nats_factory: NatsFactory, replicator_factory: ReplicatorFactory, replication_api: StubFactory
) -> None:
    rep = replicator_factory(nats_factory().url, "http://127.0.0.1:9", "a")
    api = replication_api(rep.address)
    names = [f"p{i:02d}" for i in range(PEERS)]
    for name in names:
        await api.CreatePeer(peer(name, f"http://127.0.0.1:9/{name}", site=name))

    async def update(round_: int) -> None:
        for name in names[::3]:
            change = replication_pb2.Peer(name=name, url=f"http://127.0.0.1:9/{name}/{round_}")
            await api.UpdatePeer(
                replication_pb2.UpdatePeerRequest(peer=change, update_mask=FieldMask(paths=["url"]))
            )

    async def listed() -> list[str]:
        reply = await api.ListPeers(replication_pb2.ListPeersRequest(page_size=1000))
        return [p.name for p in reply.peers]

    for round_ in range(5):
        listings = await asyncio.gather(update(round_), *(listed() for _ in range(20)))
        for found in listings[1:]:
            assert found == names, sorted(set(names) - set(found or []))
    # Every peer still has its worker: a sync of each is never "not found" (the source here
    # is away, so it fails for that reason instead).
    for name in names[:5]:
        try:
            async for _ in api.Sync(replication_pb2.SyncRequest(peer=name)):
                pass
        except grpc.aio.AioRpcError as error:
            assert error.code() is not grpc.StatusCode.NOT_FOUND, (name, error.details())
