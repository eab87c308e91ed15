"""The on-disk outbox alone: order, survival across reopen, unreadable entries, one owner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from registry.events.outbox import (
    HEADER,
    MAX_ENTRY,
    QUARANTINE,
    Outbox,
    OutboxEntryError,
    OutboxLocked,
    encode,
)


async def drain(outbox: Outbox) -> list[bytes]:
    out = []
    while (entry := await outbox.head()) is not None:
        seq, payload = entry
        out.append(payload)
        await outbox.remove(seq)
    return out


async def test_entries_come_back_in_order_after_reopen(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "ob")
    await outbox.open()
    # Concurrent appends keep the order of the calls.
    await asyncio.gather(*(outbox.append(f"e{i}".encode()) for i in range(50)))
    assert outbox.depth == 50
    first = await outbox.head()
    assert first is not None
    await outbox.remove(first[0])
    await outbox.close()

    reopened = Outbox(tmp_path / "ob")
    await reopened.open()
    assert reopened.depth == 49
    assert await drain(reopened) == [f"e{i}".encode() for i in range(1, 50)]
    # New entries continue after the old ones, never reusing a number.
    seq = await reopened.append(b"later")
    assert seq == 51
    await reopened.close()


async def test_unfinished_writes_are_dropped_on_open(tmp_path: Path) -> None:
    directory = tmp_path / "ob"
    directory.mkdir()
    # A crash between write and rename leaves a temporary file: never acknowledged.
    (directory / ".tmp-7").write_bytes(encode(b"half")[:5])
    outbox = Outbox(directory)
    await outbox.open()
    assert outbox.depth == 0
    assert not (directory / ".tmp-7").exists()
    await outbox.close()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (encode(b"payload")[:-2], "length"),
        (b"JUNK" + encode(b"payload")[4:], "magic"),
        (encode(b"payload")[:-1] + b"X", "checksum"),
        (b"\x00\x01", "truncated"),
        (HEADER.pack(b"NBX1", MAX_ENTRY + 1, 0), "oversized"),
        (encode(b"x" * 64)[: HEADER.size] + b"x" * (MAX_ENTRY + 1), "oversized"),
    ],
)
async def test_unreadable_entries_are_reported(tmp_path: Path, content: bytes, reason: str) -> None:
    outbox = Outbox(tmp_path / "ob")
    await outbox.open()
    seq = await outbox.append(b"payload")
    await outbox.append(b"next")
    (tmp_path / "ob" / f"{seq:020d}.event").write_bytes(content)
    with pytest.raises(OutboxEntryError, match=reason) as caught:
        await outbox.head()
    assert caught.value.seq == seq
    moved = await outbox.quarantine(seq)
    assert moved.parent.name == QUARANTINE and moved.read_bytes() == content
    assert await drain(outbox) == [b"next"]
    await outbox.close()


async def test_one_process_per_outbox(tmp_path: Path) -> None:
    first = Outbox(tmp_path / "ob")
    await first.open()
    second = Outbox(tmp_path / "ob")
    with pytest.raises(OutboxLocked):
        await second.open()
    await first.close()
    await second.open()
    await second.close()
