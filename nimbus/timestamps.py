"""Seconds since the epoch as protobuf Timestamps, for the gRPC messages of every service."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(seconds: float) -> Timestamp | None:
    """The moment as a Timestamp; None for 0 (never), so the field stays unset."""
    if seconds <= 0:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
