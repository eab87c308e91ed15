"""Replication between the sites of `nimbus up`, set up through the Replication API.

Idempotent across runs: a peer that exists is kept with its rules (an operator may have
changed them, e.g. to replicate deletes); only its URL and site follow the current ports.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from nimbus.grpcclient import open_channel
from nimbus.up.stack import PeerSpec
from proto.nimbus.v1 import replication_pb2 as pb
from proto.nimbus.v1 import replication_pb2_grpc as pb_grpc

CALL_TIMEOUT = 10.0


def describe_rules(peer: pb.Peer) -> str:
    """A short phrase for the status table: what travels to the peer."""
    if not peer.rules:
        return "every repository, pushes"
    parts = []
    for rule in peer.rules:
        what = ",".join(rule.include) or "every repository"
        if rule.tag_pattern:
            what += f" tags {rule.tag_pattern}"
        actions = " and ".join(f"{a}es" if a.endswith("h") else f"{a}s" for a in rule.actions)
        what += f", {actions or 'pushes'}"
        if rule.disabled:
            what += " (disabled)"
        parts.append(what)
    return "; ".join(parts)


async def ensure_peer(spec: PeerSpec, token: str) -> tuple[str, pb.Peer]:
    """Create the peer unless it exists; returns what was done ("created", "kept", "updated")
    and the peer as the replicator has it now."""
    async with open_channel(spec.replicator, token) as channel:
        stub: Any = pb_grpc.ReplicationStub(channel)
        ca_pem = await asyncio.to_thread(Path(spec.ca_file).read_text) if spec.ca_file else ""
        wanted = pb.Peer(name=spec.name, url=spec.url, site=spec.site, ca_pem=ca_pem)
        try:
            current: pb.Peer = await stub.GetPeer(
                pb.GetPeerRequest(name=spec.name), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        else:
            same = (current.url, current.site, current.ca_pem)
            if same == (wanted.url, wanted.site, wanted.ca_pem):
                return "kept", current
            request = pb.UpdatePeerRequest(
                peer=wanted, update_mask=FieldMask(paths=["url", "site", "ca_pem"])
            )
            updated: pb.Peer = await stub.UpdatePeer(request, timeout=CALL_TIMEOUT)
            return "updated", updated
        try:
            created: pb.Peer = await stub.CreatePeer(
                pb.CreatePeerRequest(peer=wanted), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            # Another replica created it meanwhile: the same outcome.
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            kept: pb.Peer = await stub.GetPeer(
                pb.GetPeerRequest(name=spec.name), timeout=CALL_TIMEOUT
            )
            return "kept", kept
        return "created", created
