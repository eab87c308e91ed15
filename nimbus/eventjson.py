"""The JSON form of ``nimbus.v1.Event``: CNCF Distribution's notification event, plus Nimbus'
``source.site`` and ``source.originSite``.

The protobuf JSON mapping does nearly all of it (the json_names in events.proto); what it
cannot do is write int64 as numbers, which Distribution's receivers expect, keep
Distribution's always-present ``target``/``request``/``actor``/``source`` objects, and leave out
``target.kind``, which Distribution's events do not have (parsing infers it again).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format

from nimbus.events import legacy_kind
from proto.nimbus.v1 import events_pb2

# Media type of Distribution's notification body, `{"events": [...]}`.
ENVELOPE_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"

_OBJECTS = ("target", "request", "actor", "source")
_INTEGERS = ("size", "length")
# Fields of nimbus.v1.Target that Distribution's JSON has no place for.
_NOT_IN_JSON = ("kind",)
# Fields of nimbus.v1.Event that go as headers instead (webhooks send `traceparent`).
_EVENT_NOT_IN_JSON = ("traceparent",)


def to_dict(event: events_pb2.Event) -> dict[str, Any]:
    doc: dict[str, Any] = json_format.MessageToDict(event)
    for key in _EVENT_NOT_IN_JSON:
        doc.pop(key, None)
    for key in _OBJECTS:
        doc.setdefault(key, {})
    target = doc["target"]
    for key in _NOT_IN_JSON:
        target.pop(key, None)
    for key in _INTEGERS:
        if key in target:
            target[key] = int(target[key])
    return doc


def to_json(event: events_pb2.Event) -> bytes:
    return json.dumps(to_dict(event), separators=(",", ":")).encode()


def envelope(events: Iterable[events_pb2.Event]) -> bytes:
    """Distribution's notification body holding ``events``."""
    return json.dumps({"events": [to_dict(e) for e in events]}, separators=(",", ":")).encode()


def from_envelope(data: bytes | str) -> list[events_pb2.Event]:
    """The events of a Distribution notification body."""
    parsed = events_pb2.Envelope()
    json_format.Parse(data, parsed, ignore_unknown_fields=True)
    return [_with_kind(e) for e in parsed.events]


def from_dict(doc: dict[str, Any]) -> events_pb2.Event:
    """Parse one event; fields Nimbus does not know (e.g. `references`) are ignored."""
    event = events_pb2.Event()
    json_format.ParseDict(doc, event, ignore_unknown_fields=True)
    return _with_kind(event)


def from_json(data: bytes | str) -> events_pb2.Event:
    event = events_pb2.Event()
    json_format.Parse(data, event, ignore_unknown_fields=True)
    return _with_kind(event)


def _with_kind(event: events_pb2.Event) -> events_pb2.Event:
    if event.HasField("target") and event.target.kind == events_pb2.TARGET_KIND_UNSPECIFIED:
        event.target.kind = legacy_kind(event.target)
    return event
