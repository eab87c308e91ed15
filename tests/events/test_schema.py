"""The event schema: generated code in step with proto/, and the JSON form Distribution's
receivers read."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

from nimbus import eventjson, streams
from nimbus.config import ConfigError, load
from registry.config import RegistryConfig
from registry.context import RequestContext
from registry.events.schema import EventSource, subject_of, to_proto
from registry.events.sink import Action, RegistryEvent

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto" / "nimbus" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def test_generated_code_is_current(tmp_path: Path) -> None:
    """`make proto` output, regenerated here, equals what is committed."""
    protos = sorted(p.relative_to(ROOT).as_posix() for p in PROTO_DIR.glob("*.proto"))
    assert "proto/nimbus/v1/events.proto" in protos
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
    )
    stale = []
    for proto in protos:
        stem = Path(proto).with_suffix("").name
        for suffix in GENERATED_SUFFIXES:
            fresh = tmp_path / "proto" / "nimbus" / "v1" / f"{stem}{suffix}"
            committed = PROTO_DIR / f"{stem}{suffix}"
            if not committed.exists() or not filecmp.cmp(fresh, committed, shallow=False):
                stale.append(committed.name)
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


def sample_event(**overrides: object) -> RegistryEvent:
    fields: dict[str, object] = {
        "action": Action.DELETE,
        "repository": "team/app",
        "digest": "sha256:" + "ab" * 32,
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "size": 5_000_000_000,
        "tag": "v1",
        "context": RequestContext(
            request_id="req-1",
            addr="10.0.0.9:51234",
            host="registry.example:5000",
            method="DELETE",
            useragent="skopeo/1.9.3",
            actor="alice",
        ),
    }
    fields.update(overrides)
    return RegistryEvent(**fields)  # type: ignore[arg-type]


SOURCE = EventSource(site="eu-1", addr="node-a:5000", instance_id="inst-1")


def test_json_form_matches_distribution_field_for_field() -> None:
    message = to_proto(sample_event(), SOURCE)
    doc = eventjson.to_dict(message)
    assert list(doc) == ["id", "timestamp", "action", "target", "request", "actor", "source"]
    assert doc["action"] == "delete"
    assert doc["timestamp"].endswith("Z") and "T" in doc["timestamp"]
    assert doc["target"] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + "ab" * 32,
        # JSON numbers, beyond 32 bits, as Distribution writes them.
        "size": 5_000_000_000,
        "length": 5_000_000_000,
        "repository": "team/app",
        "url": f"http://registry.example:5000/v2/team/app/manifests/sha256:{'ab' * 32}",
        "tag": "v1",
    }
    assert doc["request"] == {
        "id": "req-1",
        "addr": "10.0.0.9:51234",
        "host": "registry.example:5000",
        "method": "DELETE",
        "useragent": "skopeo/1.9.3",
    }
    assert doc["actor"] == {"name": "alice"}
    assert doc["source"] == {
        "addr": "node-a:5000",
        "instanceID": "inst-1",
        "site": "eu-1",
        "originSite": "eu-1",
    }
    # And back: a receiver's JSON parses to the same message.
    assert eventjson.from_json(eventjson.to_json(message)) == message


def test_replicated_write_keeps_its_origin_site_and_blob_url() -> None:
    ctx = RequestContext(host="h:1", method="POST", origin_site="us-2")
    message = to_proto(
        sample_event(
            action=Action.MOUNT, is_blob=True, tag="", from_repository="base/img", context=ctx
        ),
        SOURCE,
    )
    doc = eventjson.to_dict(message)
    assert doc["source"]["site"] == "eu-1"
    assert doc["source"]["originSite"] == "us-2"
    assert doc["target"]["fromRepository"] == "base/img"
    assert doc["target"]["url"] == f"http://h:1/v2/team/app/blobs/sha256:{'ab' * 32}"
    assert subject_of(message) == "nimbus.events.eu-1.mount"


def test_distribution_envelope_parses_back() -> None:
    events = [to_proto(sample_event(), SOURCE), to_proto(sample_event(tag="v2"), SOURCE)]
    body = eventjson.envelope(events)
    assert eventjson.from_envelope(body) == events
    # Unknown fields that Distribution sends (e.g. target.references) are ignored.
    doc = eventjson.to_dict(events[0])
    doc["target"]["references"] = [{"digest": "sha256:" + "cd" * 32}]
    assert eventjson.from_dict(doc) == events[0]


def test_subjects_and_names() -> None:
    assert streams.subject("eu-1", "push") == "nimbus.events.eu-1.push"
    assert streams.site_subjects("eu-1") == "nimbus.events.eu-1.>"
    assert streams.action_subjects("delete") == "nimbus.events.*.delete"
    with pytest.raises(ValueError):
        streams.subject("eu.1", "push")
    names = [
        streams.EVENTS_STREAM,
        streams.NOTIFIER_CONSUMER,
        streams.REPLICATOR_CONSUMER,
        streams.WEBHOOKS_BUCKET,
        streams.PEERS_BUCKET,
        streams.DELIVERIES_BUCKET,
    ]
    assert len(set(names)) == len(names)
    for name in names:
        assert all(c.isalnum() or c in "-_" for c in name), name


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"events": {"site": "eu.1"}}, "events.site"),
        ({"events": {"nats": ["localhost:4222"]}}, "events.nats"),
        ({"events": {"publish_timeout": 0}}, "events.publish_timeout"),
        ({"events": {"duplicate_window": 900, "stream_max_age": 60}}, "duplicate_window"),
        ({"events": {"nats_user": "u"}}, "nats_password"),
        ({"events": {"nats_tls_key": "k.pem"}}, "nats_tls_cert"),
        ({"events": {"nats_creds": "/nonexistent/user.creds"}}, "events.nats_creds: no such"),
    ],
)
def test_events_config_is_validated(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(RegistryConfig, env={}, flags=values)


def test_events_config_from_environment() -> None:
    config = load(
        RegistryConfig,
        env={
            "NIMBUS_EVENTS_NATS": "nats://a:4222,nats://b:4222",
            "NIMBUS_EVENTS_SITE": "eu-1",
            "NIMBUS_EVENTS_NATS_TOKEN": "s3cret",
            "NIMBUS_EVENTS_PUBLISH_TIMEOUT": "0.25",
        },
    )
    options = config.events.nats_options("nimbus-registry")
    assert options.servers == ["nats://a:4222", "nats://b:4222"]
    assert options.token == "s3cret"
    assert config.events.publish_timeout == 0.25
    assert config.events.enabled
