"""The `nimbus.v1.Replication` gRPC servicer: unpacks requests, calls the service, maps errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

import aiohttp
import grpc

from nimbus.grpcerrors import Context, error_mapper, stream_error_mapper
from nimbus.lanes import NATS_UNAVAILABLE
from nimbus.oci.errors import RegistryError
from nimbus.timestamps import timestamp
from proto.nimbus.v1 import replication_pb2, replication_pb2_grpc
from replicator.errors import FailureNotFound, InvalidRequest
from replicator.failures import Failure
from replicator.peers import Peer, PeerError, PeerExistsError, PeerNotFoundError
from replicator.rules import Rule
from replicator.service import ReplicationService

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

# Only the domain's own errors, and the outages a caller may wait out; anything else is a
# fault of the replicator: INTERNAL, with its traceback in the log.
_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (PeerNotFoundError, grpc.StatusCode.NOT_FOUND),
    (FailureNotFound, grpc.StatusCode.NOT_FOUND),
    (PeerExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (PeerError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    *((cls, grpc.StatusCode.UNAVAILABLE) for cls in NATS_UNAVAILABLE),
    # This site's registry, listed by Sync, is away or refuses.
    (RegistryError, grpc.StatusCode.UNAVAILABLE),
    (aiohttp.ClientError, grpc.StatusCode.UNAVAILABLE),
]


def _message(error: Exception) -> str:
    if isinstance(error, PeerNotFoundError):
        return f"no peer named {error.args[0]!r}"
    if isinstance(error, PeerExistsError):
        return f"a peer named {error.args[0]!r} exists already"
    return str(error) or type(error).__name__


_mapped = error_mapper(_CODES, _message)


def _page(items: Sequence[T], page_size: int, page_token: str) -> tuple[Sequence[T], str]:
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    try:
        start = int(page_token) if page_token else 0
    except ValueError:
        raise InvalidRequest("page_token: not one this API gave") from None
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


# -- conversions ------------------------------------------------------------------------


def rule_to_proto(rule: Rule) -> replication_pb2.Rule:
    return replication_pb2.Rule(
        include=rule.include,
        exclude=rule.exclude,
        tag_pattern=rule.tag_pattern,
        actions=rule.actions,
        disabled=not rule.enabled,
    )


def rule_from_proto(msg: replication_pb2.Rule) -> Rule:
    return Rule(
        include=list(msg.include),
        exclude=list(msg.exclude),
        tag_pattern=msg.tag_pattern,
        actions=list(msg.actions) or ["push"],
        enabled=not msg.disabled,
    )


def peer_to_proto(peer: Peer) -> replication_pb2.Peer:
    kind = "token" if peer.token else ("basic" if peer.username else "")
    return replication_pb2.Peer(
        name=peer.name,
        url=peer.url,
        site=peer.site,
        tls_insecure=not peer.tls_verify,
        ca_pem=peer.ca_pem,
        reconcile_interval_seconds=peer.reconcile_interval,
        rules=[rule_to_proto(r) for r in peer.rules],
        credentials_kind=kind,
        client_cert_pem=peer.client_cert_pem,
    )


def peer_from_proto(msg: replication_pb2.Peer) -> Peer:
    return Peer(
        name=msg.name,
        url=msg.url,
        site=msg.site,
        username=msg.credentials.username,
        password=msg.credentials.password,
        token=msg.credentials.token,
        tls_verify=not msg.tls_insecure,
        ca_pem=msg.ca_pem,
        client_cert_pem=msg.client_cert_pem,
        client_key_pem=msg.client_key_pem,
        reconcile_interval=msg.reconcile_interval_seconds,
        rules=[rule_from_proto(r) for r in msg.rules],
    )


# The update mask's paths (fields of the Peer message) as fields of the domain's peer.
_FIELDS: dict[str, tuple[str, ...]] = {
    "url": ("url",),
    "site": ("site",),
    "credentials": ("username", "password", "token"),
    "credentials.username": ("username",),
    "credentials.password": ("password",),
    "credentials.token": ("token",),
    "tls_insecure": ("tls_verify",),
    "ca_pem": ("ca_pem",),
    "client_cert_pem": ("client_cert_pem",),
    "client_key_pem": ("client_key_pem",),
    "reconcile_interval_seconds": ("reconcile_interval",),
    "rules": ("rules",),
}


def update_fields(paths: Sequence[str]) -> list[str]:
    """The peer fields an update mask names; unknown paths pass as they are, for the service
    to refuse by name."""
    return [field for path in paths for field in _FIELDS.get(path, (path,))]


def failure_to_proto(failure: Failure) -> replication_pb2.Failure:
    return replication_pb2.Failure(
        id=failure.id,
        peer=failure.peer,
        repository=failure.repository,
        reference=failure.reference,
        digest=failure.digest,
        action=failure.action,
        reason=failure.reason,
        kind=failure.kind,
        attempts=failure.attempts,
        first_failed=timestamp(failure.first_failed),
        last_failed=timestamp(failure.last_failed),
    )


class ReplicationServicer(replication_pb2_grpc.ReplicationServicer):  # type: ignore[misc]
    def __init__(self, service: ReplicationService) -> None:
        self._service = service

    @_mapped
    async def CreatePeer(
        self, request: replication_pb2.CreatePeerRequest, context: Context
    ) -> replication_pb2.Peer:
        peer = await self._service.create_peer(peer_from_proto(request.peer))
        return peer_to_proto(peer)

    @_mapped
    async def GetPeer(
        self, request: replication_pb2.GetPeerRequest, context: Context
    ) -> replication_pb2.Peer:
        return peer_to_proto(await self._service.get_peer(request.name))

    @_mapped
    async def ListPeers(
        self, request: replication_pb2.ListPeersRequest, context: Context
    ) -> replication_pb2.ListPeersResponse:
        peers = await self._service.list_peers()
        page, token = _page(peers, request.page_size, request.page_token)
        return replication_pb2.ListPeersResponse(
            peers=[peer_to_proto(p) for p in page], next_page_token=token
        )

    @_mapped
    async def UpdatePeer(
        self, request: replication_pb2.UpdatePeerRequest, context: Context
    ) -> replication_pb2.Peer:
        fields = update_fields(request.update_mask.paths)
        updated = await self._service.update_peer(
            request.peer.name, peer_from_proto(request.peer), fields
        )
        return peer_to_proto(updated)

    @_mapped
    async def DeletePeer(
        self, request: replication_pb2.DeletePeerRequest, context: Context
    ) -> replication_pb2.DeletePeerResponse:
        await self._service.delete_peer(request.name)
        return replication_pb2.DeletePeerResponse()

    @_mapped
    async def GetStatus(
        self, request: replication_pb2.GetStatusRequest, context: Context
    ) -> replication_pb2.GetStatusResponse:
        found = await self._service.get_status(request.peer)
        return replication_pb2.GetStatusResponse(
            peers=[
                replication_pb2.PeerStatus(
                    peer=s.peer,
                    backlog=s.backlog,
                    in_flight=s.in_flight,
                    last_success=timestamp(s.counters.last_success),
                    last_success_change=s.counters.last_success_what,
                    last_error=timestamp(s.counters.last_error),
                    last_error_reason=s.counters.last_error_reason,
                    bytes_copied=s.counters.bytes_copied,
                    images_copied=s.counters.images_copied,
                    deletes_replicated=s.counters.deletes,
                    failures=s.failures,
                    last_hour=[
                        replication_pb2.PeerSample(
                            minute=timestamp(m.start),
                            images_copied=m.images,
                            bytes_copied=m.bytes,
                            deletes_replicated=m.deletes,
                            lag_seconds_mean=m.lag_mean,
                            lag_seconds_max=m.lag_max,
                        )
                        for m in s.counters.last_hour()
                    ],
                )
                for s in found
            ]
        )

    @_mapped
    async def ListFailures(
        self, request: replication_pb2.ListFailuresRequest, context: Context
    ) -> replication_pb2.ListFailuresResponse:
        failures = await self._service.list_failures(request.peer)
        page, token = _page(failures, request.page_size, request.page_token)
        return replication_pb2.ListFailuresResponse(
            failures=[failure_to_proto(f) for f in page], next_page_token=token
        )

    @_mapped
    async def RetryFailure(
        self, request: replication_pb2.RetryFailureRequest, context: Context
    ) -> replication_pb2.RetryFailureResponse:
        outcome = await self._service.retry_failures(request.peer, request.id)
        return replication_pb2.RetryFailureResponse(
            retried=outcome.retried,
            succeeded=outcome.succeeded,
            still_failing=[failure_to_proto(f) for f in outcome.still_failing],
        )

    @_mapped
    async def LocateManifest(
        self, request: replication_pb2.LocateManifestRequest, context: Context
    ) -> replication_pb2.LocateManifestResponse:
        found = await self._service.locate(request.repository, request.reference)
        return replication_pb2.LocateManifestResponse(
            peers=[
                replication_pb2.ManifestPresence(
                    peer=p.peer,
                    selected=p.selected,
                    present=p.present,
                    digest=p.digest,
                    error=p.error,
                )
                for p in found
            ]
        )

    @stream_error_mapper(_CODES, _message)
    async def Sync(
        self, request: replication_pb2.SyncRequest, context: Context
    ) -> AsyncIterator[replication_pb2.SyncProgress]:
        async for p in self._service.sync(request.peer, request.repository):
            yield replication_pb2.SyncProgress(
                phase=p.phase,
                repository=p.repository,
                reference=p.reference,
                done=p.done,
                total=p.total,
                images_copied=p.images_copied,
                bytes_copied=p.bytes_copied,
                failed=p.failed,
                error=p.error,
                finished=p.finished,
            )
