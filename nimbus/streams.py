"""Names on NATS that several services share: the event stream, its subjects, the durable
consumers and the KV buckets. Change a name here and every service follows.

Messages on the stream carry one ``nimbus.v1.Event`` in protobuf binary form, read with
``nimbus.events.decode(msg.data)``; the ``Nats-Msg-Id`` header is the event id, so
JetStream drops a re-published copy within the stream's duplicate window.
"""

from __future__ import annotations

# JetStream stream holding the events of every site that shares this NATS system.
EVENTS_STREAM = "NIMBUS_EVENTS"
EVENTS_SUBJECT_PREFIX = "nimbus.events"
# What the stream captures: nimbus.events.<site>.<action>.
EVENTS_SUBJECTS = f"{EVENTS_SUBJECT_PREFIX}.>"

# Headers of each event message.
MSG_ID_HEADER = "Nats-Msg-Id"
CONTENT_TYPE_HEADER = "Content-Type"
EVENT_CONTENT_TYPE = "application/protobuf; proto=nimbus.v1.Event"

# Durable consumers: replicas of one service share one, so work is split, never duplicated.
NOTIFIER_CONSUMER = "nimbus-notifier"
REPLICATOR_CONSUMER = "nimbus-replicator"

# Key-value buckets.
WEBHOOKS_BUCKET = "nimbus-webhooks"
PEERS_BUCKET = "nimbus-peers"
REPLICATION_FAILURES_BUCKET = "nimbus-replication-failures"
REPLICATION_STATUS_BUCKET = "nimbus-replication-status"
DELIVERIES_BUCKET = "nimbus-deliveries"


def site_bucket(bucket: str, site: str) -> str:
    """A site's own copy of a bucket: sites sharing one NATS keep their replication apart."""
    return f"{bucket}-{_token(site, 'site')}"


def _token(value: str, what: str) -> str:
    # A subject token may not hold the separators or wildcards of NATS subjects.
    if not value or any(c in value for c in ".*> \t\r\n"):
        raise ValueError(f"{what} {value!r} cannot be a NATS subject token")
    return value


def subject(site: str, action: str) -> str:
    """The subject of one event: ``nimbus.events.<site>.<action>``."""
    return f"{EVENTS_SUBJECT_PREFIX}.{_token(site, 'site')}.{_token(action, 'action')}"


def site_subjects(site: str) -> str:
    """Filter for every event of one site."""
    return f"{EVENTS_SUBJECT_PREFIX}.{_token(site, 'site')}.>"


def action_subjects(action: str) -> str:
    """Filter for one action at every site."""
    return f"{EVENTS_SUBJECT_PREFIX}.*.{_token(action, 'action')}"


def replicator_consumer(site: str, peer: str) -> str:
    """The durable consumer of one peer of one site: a slow peer only holds back its own."""
    return f"{REPLICATOR_CONSUMER}-{_token(site, 'site')}-{_token(peer, 'peer')}"
