"""Recent events for `ListEvents`: the stream's latest events, read once by a short-lived
consumer and filtered here as a watch filters them."""

from __future__ import annotations

import contextlib
import logging
from collections import deque

from nats.js import JetStreamContext, api

from nimbus.events import UndecodableEvent, decode
from nimbus.streams import EVENTS_STREAM, EVENTS_SUBJECTS, action_subjects
from notifier.errors import InvalidArgument
from notifier.filters import matches, problems
from proto.nimbus.v1 import events_pb2, webhooks_pb2

log = logging.getLogger("nimbus.notifier.history")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# How far back a filter looks: bounds the cost of a filter that matches rarely.
SCAN_WINDOW = 10_000
_BATCH = 500
_FETCH_TIMEOUT = 5.0


async def recent_events(
    js: JetStreamContext, selector: webhooks_pb2.EventFilter, limit: int = 0
) -> list[events_pb2.Event]:
    """Up to `limit` matching events among the stream's last SCAN_WINDOW, newest first."""
    wrong = problems(selector)
    if wrong:
        raise InvalidArgument("; ".join(wrong))
    if limit > MAX_LIMIT:
        raise InvalidArgument(f"limit: at most {MAX_LIMIT}, got {limit}")
    limit = limit or DEFAULT_LIMIT
    state = (await js.stream_info(EVENTS_STREAM)).state
    if not state.messages:
        return []
    start = max(state.first_seq, state.last_seq - SCAN_WINDOW + 1)
    actions = selector.actions
    # One action narrows the consumer on the server; anything else is filtered here.
    subject = action_subjects(actions[0]) if len(actions) == 1 else EVENTS_SUBJECTS
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        ack_policy=api.AckPolicy.NONE,
        # Removed by the server should this process die before removing it.
        inactive_threshold=30.0,
        mem_storage=True,
    )
    sub = await js.pull_subscribe(subject, stream=EVENTS_STREAM, config=config)
    found: deque[events_pb2.Event] = deque(maxlen=limit)
    name = ""
    try:
        info = await sub.consumer_info()
        # The count pending when the read starts: events arriving meanwhile are the feed's.
        name, pending = info.name or "", info.num_pending or 0
        while pending > 0:
            batch = await sub.fetch(min(_BATCH, pending), timeout=_FETCH_TIMEOUT)
            pending -= len(batch)
            for msg in batch:
                try:
                    event = decode(msg.data)
                except UndecodableEvent as error:
                    log.warning("unreadable message skipped: %s", error)
                    continue
                if matches(selector, event):
                    found.append(event)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if name:
            with contextlib.suppress(Exception):
                await js.delete_consumer(EVENTS_STREAM, name)
    return list(reversed(found))
