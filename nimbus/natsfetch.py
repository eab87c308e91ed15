"""Pulling from a durable consumer without waiting for a full batch.

nats-py's `fetch(n)` returns at once what the consumer already has; but when it has nothing, it
leaves a lingering pull for n messages and, after the first arrives, waits for the other n-1
until the timeout. With a trickle of events that holds each one back for up to the timeout.
So: take what is there; when nothing is, wait for exactly one message, then take the rest.
"""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

# Long enough for the server's answer to the no-wait probe on loopback or a LAN.
_PROBE = 0.05


async def fetch_available(sub: Any, limit: int, wait: float) -> list[Msg]:
    """Up to ``limit`` messages: those pending now, else the next one within ``wait`` seconds.

    Raises TimeoutError (nats' own subclasses it) when nothing came within ``wait``.
    """
    try:
        msgs: list[Msg] = await sub.fetch(limit, timeout=_PROBE)
        return msgs
    except TimeoutError:
        pass
    first: list[Msg] = await sub.fetch(1, timeout=wait)
    return first
