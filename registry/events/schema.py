"""From the services' RegistryEvent to the wire schema ``nimbus.v1.Event``."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field

from nimbus import events, streams
from proto.nimbus.v1 import events_pb2
from registry.events.sink import RegistryEvent


@dataclass(frozen=True, slots=True)
class EventSource:
    """This registry instance, as `source` of every event it publishes."""

    site: str
    # HOST:PORT of this instance, like Distribution's `source.addr`.
    addr: str
    # One per process, like Distribution's `source.instanceID`.
    instance_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def local(cls, site: str, port: int) -> EventSource:
        return cls(site=site, addr=f"{socket.gethostname()}:{port}")


def target_url(event: RegistryEvent) -> str:
    """Where the content is fetched, as Distribution builds it from the request's host."""
    host = event.context.host
    if not host:
        return ""
    kind = "blobs" if event.is_blob else "manifests"
    scheme = event.context.scheme or "http"
    return f"{scheme}://{host}/v2/{event.repository}/{kind}/{event.digest}"


def to_proto(event: RegistryEvent, source: EventSource) -> events_pb2.Event:
    ctx = event.context
    message = events_pb2.Event(
        id=str(uuid.uuid4()),
        action=event.action.value,
        target=events_pb2.Target(
            media_type=event.media_type,
            digest=event.digest,
            size=event.size,
            length=event.size,
            repository=event.repository,
            url=target_url(event),
            tag=event.tag,
            from_repository=event.from_repository,
            upstream=event.upstream,
            kind=events.BLOB if event.is_blob else events.MANIFEST,
        ),
        request=events_pb2.Request(
            id=ctx.request_id,
            addr=ctx.addr,
            host=ctx.host,
            method=ctx.method,
            useragent=ctx.useragent,
        ),
        actor=events_pb2.Actor(name=ctx.actor),
        source=events_pb2.Source(
            addr=source.addr,
            instance_id=source.instance_id,
            site=source.site,
            origin_site=ctx.origin_site or source.site,
        ),
        traceparent=ctx.traceparent,
    )
    message.timestamp.GetCurrentTime()
    return message


def subject_of(event: events_pb2.Event) -> str:
    """``nimbus.events.<site>.<action>``, from the event itself (outbox entries need no more)."""
    return streams.subject(event.source.site, event.action)
