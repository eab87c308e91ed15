"""The event vocabulary every service shares: the actions, the target kinds, and the one reader
of ``nimbus.v1.Event`` messages off the stream.

A message that ``decode`` refuses can never be handled, by this replica or another, so every
consumer treats ``UndecodableEvent`` alike: it logs the message once and terminates it
(JetStream's AckTerm), so it is neither redelivered nor holding back the events behind it.
"""

from __future__ import annotations

from enum import StrEnum

from google.protobuf.message import DecodeError

from nimbus.oci import mediatypes as mt
from proto.nimbus.v1 import events_pb2


class Action(StrEnum):
    """What happened to a target: Distribution's event actions, the value of ``Event.action``."""

    PUSH = "push"
    PULL = "pull"
    DELETE = "delete"
    MOUNT = "mount"
    # Nimbus: a pull-through cache stored a manifest fetched from an upstream (its own action,
    # so that consumers of Distribution's four never take it for a push or a client's pull).
    FILL = "fill"


# The values of ``Target.kind``.
MANIFEST = events_pb2.TARGET_KIND_MANIFEST
BLOB = events_pb2.TARGET_KIND_BLOB

_ACTIONS = frozenset(Action)


class UndecodableEvent(ValueError):
    """A message that is not a usable ``nimbus.v1.Event``; no retry makes it one."""


def decode(data: bytes) -> events_pb2.Event:
    """The event a stream message carries, checked; raises UndecodableEvent."""
    try:
        event: events_pb2.Event = events_pb2.Event.FromString(data)
    except DecodeError as error:
        raise UndecodableEvent(f"not a nimbus.v1.Event: {error}") from None
    if not event.id:
        raise UndecodableEvent("event without an id")
    if event.action not in _ACTIONS:
        raise UndecodableEvent(f"event {event.id}: unknown action {event.action!r}")
    target = event.target
    if not event.HasField("target") or not target.repository or not target.digest:
        raise UndecodableEvent(f"event {event.id}: no target repository and digest")
    if target.kind == events_pb2.TARGET_KIND_UNSPECIFIED:
        target.kind = legacy_kind(target)
    return event


def legacy_kind(target: events_pb2.Target) -> events_pb2.TargetKind:
    """The kind of a target from a registry that did not set ``kind`` yet (events still in the
    stream or an outbox from before the field, Distribution's JSON): the URL's segment before
    the digest says (a repository may be named `x/blobs/y`), else the media type."""
    parts: list[str] = target.url.rsplit("/", 2)
    if len(parts) == 3 and parts[1] == "blobs":
        return BLOB
    if len(parts) == 3 and parts[1] == "manifests":
        return MANIFEST
    return MANIFEST if target.media_type in mt.MANIFESTS else BLOB
