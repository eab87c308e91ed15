"""The one reader of stream messages: what it refuses, and the kinds it fills in for events
published before `Target.kind` existed."""

from __future__ import annotations

import pytest

from nimbus import eventjson, events
from nimbus.events import Action, UndecodableEvent, decode
from proto.nimbus.v1 import events_pb2
from registry.events.schema import to_proto
from tests.events.test_schema import SOURCE, sample_event

DIGEST = "sha256:" + "ab" * 32


def event(**target: object) -> events_pb2.Event:
    fields: dict[str, object] = {"repository": "team/app", "digest": DIGEST, **target}
    return events_pb2.Event(id="e1", action="push", target=events_pb2.Target(**fields))


def test_a_registry_event_decodes_as_published() -> None:
    for is_blob, kind in ((False, events.MANIFEST), (True, events.BLOB)):
        message = to_proto(sample_event(is_blob=is_blob), SOURCE)
        assert message.target.kind == kind
        assert decode(message.SerializeToString()) == message


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0a\xff", "not a nimbus.v1.Event"),
        (b"\xff\xff\xff\xff not a protobuf", "not a nimbus.v1.Event"),
        (b"", "without an id"),
        (event().SerializeToString().replace(b"push", b"poke"), "unknown action 'poke'"),
        (events_pb2.Event(id="e1", action="ping").SerializeToString(), "unknown action"),
        (events_pb2.Event(id="e1", action="push").SerializeToString(), "no target"),
        (event(repository="").SerializeToString(), "no target"),
        (event(digest="").SerializeToString(), "no target"),
    ],
)
def test_what_no_consumer_can_act_on_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(UndecodableEvent, match=reason):
        decode(data)


def test_every_action_is_accepted() -> None:
    for action in Action:
        message = event()
        message.action = action
        assert decode(message.SerializeToString()).action == action


@pytest.mark.parametrize(
    ("url", "media_type", "kind"),
    [
        (f"http://h:5000/v2/team/app/blobs/{DIGEST}", "application/octet-stream", events.BLOB),
        (f"http://h:5000/v2/team/app/manifests/{DIGEST}", "application/json", events.MANIFEST),
        # A repository may have `blobs` (or `manifests`) in its name: the segment before the
        # digest says which.
        (f"http://h/v2/x/blobs/app/manifests/{DIGEST}", "", events.MANIFEST),
        (f"http://h/v2/x/manifests/app/blobs/{DIGEST}", "", events.BLOB),
        # No URL (the request had no Host): the media type says.
        ("", "application/vnd.oci.image.index.v1+json", events.MANIFEST),
        ("", "application/vnd.oci.image.layer.v1.tar+gzip", events.BLOB),
    ],
)
def test_events_published_before_target_kind_get_it(url: str, media_type: str, kind: int) -> None:
    """Events still in the stream or an outbox from before the field read as if they had it."""
    old = event(url=url, media_type=media_type)
    assert old.target.kind == events_pb2.TARGET_KIND_UNSPECIFIED
    assert decode(old.SerializeToString()).target.kind == kind
    assert eventjson.from_dict(eventjson.to_dict(old)).target.kind == kind


def test_kind_stays_out_of_the_distribution_json() -> None:
    for is_blob in (False, True):
        message = to_proto(sample_event(is_blob=is_blob), SOURCE)
        assert "kind" not in eventjson.to_dict(message)["target"]
        assert b"kind" not in eventjson.envelope([message])
        assert b"TARGET_KIND" not in eventjson.to_json(message)
