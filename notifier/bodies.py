"""The JSON bodies a webhook can receive: Distribution's envelope or a CloudEvents 1.0 event."""

from __future__ import annotations

import json
from typing import Any

from nimbus import eventjson
from proto.nimbus.v1 import events_pb2, webhooks_pb2

DISTRIBUTION_V1 = eventjson.ENVELOPE_MEDIA_TYPE
DISTRIBUTION_V2 = "application/vnd.docker.distribution.events.v2+json"
CLOUDEVENTS = "application/cloudevents+json"
CLOUDEVENT_TYPE_PREFIX = "io.nimbus.registry."

CONTENT_TYPES: dict[int, str] = {
    webhooks_pb2.BODY_FORMAT_UNSPECIFIED: DISTRIBUTION_V1,
    webhooks_pb2.BODY_FORMAT_DISTRIBUTION_V1: DISTRIBUTION_V1,
    webhooks_pb2.BODY_FORMAT_DISTRIBUTION_V2: DISTRIBUTION_V2,
    webhooks_pb2.BODY_FORMAT_CLOUDEVENTS: CLOUDEVENTS,
}


def cloudevent(event: events_pb2.Event) -> dict[str, Any]:
    subject = event.target.repository
    if event.target.tag:
        subject += f":{event.target.tag}"
    elif event.target.digest:
        subject += f"@{event.target.digest}"
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": f"/nimbus/sites/{event.source.site or 'local'}",
        "type": CLOUDEVENT_TYPE_PREFIX + event.action,
        "subject": subject,
        "time": event.timestamp.ToJsonString(),
        "datacontenttype": "application/json",
        "data": eventjson.to_dict(event),
    }


def render(event: events_pb2.Event, body_format: int) -> tuple[bytes, str]:
    """The body and its content type."""
    content_type = CONTENT_TYPES.get(body_format, DISTRIBUTION_V1)
    payload = (
        cloudevent(event) if content_type == CLOUDEVENTS else {"events": [eventjson.to_dict(event)]}
    )
    return json.dumps(payload, separators=(",", ":")).encode(), content_type
