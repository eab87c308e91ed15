"""What the registry's services tell the event system, and the sink that hears it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from nimbus.events import Action
from registry.context import RequestContext

__all__ = ["Action", "EventSink", "NullSink", "RegistryEvent"]


@dataclass(frozen=True, slots=True)
class RegistryEvent:
    """A domain event before it becomes the wire schema of ``proto/nimbus/v1/events.proto``."""

    action: Action
    repository: str
    digest: str
    media_type: str
    size: int
    tag: str = ""
    # Blob events (uploads, mounts) versus manifest events.
    is_blob: bool = False
    from_repository: str = ""
    # A fill's upstream (the pull-through cache's name of it).
    upstream: str = ""
    context: RequestContext = field(default_factory=RequestContext)


class EventSink(Protocol):
    async def emit(self, event: RegistryEvent) -> None:
        """Record the event durably; returns once it will not be lost."""


class NullSink:
    """Events off: the registry runs without NATS."""

    async def emit(self, event: RegistryEvent) -> None:
        return None
