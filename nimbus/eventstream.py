"""The event stream's definition, so any service can make sure it exists as the registry does
(a notifier or replicator that starts first can create it before its durable consumer)."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from nimbus import streams

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
# Settings we own; any other change on the server is left alone.
_MANAGED = ("subjects", "max_age", "max_bytes", "max_msgs", "duplicate_window", "num_replicas")


@dataclass(frozen=True)
class StreamSettings:
    """Retention of the event stream; values <= 0 mean unlimited."""

    max_age: float = 7 * 24 * 3600.0
    max_bytes: int = 0
    max_msgs: int = 0
    # How long JetStream remembers event ids to drop re-published copies.
    duplicate_window: float = 600.0
    replicas: int = 1

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=streams.EVENTS_STREAM,
            description="Nimbus registry events (nimbus.v1.Event)",
            subjects=[streams.EVENTS_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age if self.max_age > 0 else None,
            max_bytes=self.max_bytes if self.max_bytes > 0 else -1,
            max_msgs=self.max_msgs if self.max_msgs > 0 else -1,
            duplicate_window=self.duplicate_window,
            num_replicas=self.replicas,
        )


def _differs(current: StreamConfig | None, wanted: StreamConfig) -> bool:
    if current is None:
        return True
    for key in _MANAGED:
        have, want = getattr(current, key), getattr(wanted, key)
        if key == "max_age":
            have, want = have or 0, want or 0
        if have != want:
            return True
    return False


async def ensure(js: JetStreamContext, settings: StreamSettings) -> str:
    """Create the stream, or bring its settings up to date; raises what NATS answers."""
    config = settings.config()
    try:
        info = await js.stream_info(streams.EVENTS_STREAM)
    except NotFoundError:
        await js.add_stream(config)
        return CREATED
    if _differs(info.config, config):
        await js.update_stream(config)
        return UPDATED
    return UNCHANGED
