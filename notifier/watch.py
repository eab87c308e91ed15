"""Live events for `WatchEvents`: an ephemeral ordered consumer from now on, filtered here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType

from nats.js import JetStreamContext, api

from nimbus.events import UndecodableEvent, decode
from nimbus.streams import EVENTS_STREAM, EVENTS_SUBJECTS, action_subjects
from notifier.filters import matches
from proto.nimbus.v1 import events_pb2, webhooks_pb2

log = logging.getLogger("nimbus.notifier.watch")


class EventWatch:
    """`async with EventWatch(js, filter) as watch:` subscribed on entry; iterate for events."""

    def __init__(self, js: JetStreamContext, selector: webhooks_pb2.EventFilter) -> None:
        self._js = js
        self._selector = selector
        self._sub: JetStreamContext.PushSubscription | None = None

    async def __aenter__(self) -> EventWatch:
        actions = self._selector.actions
        # One action narrows the subscription on the server; anything else is filtered here.
        subject = action_subjects(actions[0]) if len(actions) == 1 else EVENTS_SUBJECTS
        self._sub = await self._js.subscribe(
            subject,
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def __aiter__(self) -> AsyncIterator[events_pb2.Event]:
        assert self._sub is not None, "use inside `async with`"
        async for msg in self._sub.messages:
            try:
                event = decode(msg.data)
            except UndecodableEvent as error:
                # No ack to withhold on a watch: the shared consumers terminate it.
                log.warning("unreadable message skipped: %s", error, extra={"subject": msg.subject})
                continue
            if matches(self._selector, event):
                yield event
