"""What `nimbus ctl` prints: readable tables by default, JSON with `--json`, clear errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message


@dataclass(frozen=True)
class Column:
    """One column of a table: its header and how to read the cell from a message."""

    header: str
    value: Callable[[Any], object]


def to_dict(message: Message) -> dict[str, Any]:
    """The JSON form of a message: proto field names, defaults included, 64-bit ints as ints."""
    data: dict[str, Any] = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    converted: dict[str, Any] = _ints(data)
    return converted


def _ints(value: Any) -> Any:
    # The JSON mapping renders int64 as strings; scripts want numbers, and sizes fit in a double.
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) < 19:
        return int(value)
    return value


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def short_digest(digest: str, length: int = 12) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:length]}" if hex_part else digest


def format_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *rows]
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if value is None or value == "":
        return "-"
    return str(value)


class Output:
    """Prints results; every command goes through one of these so `--json` works everywhere."""

    def __init__(self, json_mode: bool, out: TextIO | None = None, err: TextIO | None = None):
        self.json_mode = json_mode
        self._out = out or sys.stdout
        self._err = err or sys.stderr

    def _print_json(self, data: Any) -> None:
        print(json.dumps(data, indent=None if isinstance(data, dict) else 2), file=self._out)

    def table(self, items: Sequence[Message], columns: Sequence[Column], empty: str = "") -> None:
        """A list: a table, or a JSON array of the messages."""
        if self.json_mode:
            print(json.dumps([to_dict(m) for m in items], indent=2), file=self._out)
            return
        if not items:
            if empty:
                print(empty, file=self._out)
            return
        rows = [[_cell(c.value(m)) for c in columns] for m in items]
        print(format_table(rows, [c.header for c in columns]), file=self._out)

    def record(self, item: Message, fields: Sequence[Column]) -> None:
        """One object: `Field: value` lines, or its JSON object."""
        if self.json_mode:
            print(json.dumps(to_dict(item), indent=2), file=self._out)
            return
        width = max((len(f.header) for f in fields), default=0)
        for f in fields:
            print(f"{(f.header + ':').ljust(width + 1)} {_cell(f.value(item))}", file=self._out)

    def stream_item(self, item: Message, text: str) -> None:
        """One message of a stream: a readable line, or one JSON object a line."""
        if self.json_mode:
            print(json.dumps(to_dict(item)), file=self._out, flush=True)
        else:
            print(text, file=self._out, flush=True)

    def done(self, text: str, data: dict[str, Any] | None = None) -> None:
        """The outcome of an action: a sentence, or a JSON object when there is one."""
        if self.json_mode:
            self._print_json(data if data is not None else {"ok": True, "message": text})
        else:
            print(text, file=self._out)

    def error(self, text: str) -> None:
        print(f"nimbus ctl: {text}", file=self._err)


def describe_rpc_error(error: grpc.aio.AioRpcError, service: str, address: str) -> str:
    """A sentence saying what went wrong with a call, naming the service and its address."""
    code = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach {service} at {address} ({details or 'unavailable'})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{service} at {address} did not answer in time"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (
            f"{service} at {address} refused the call: admin token missing or wrong "
            "(pass --token or set NIMBUS_ADMIN_TOKEN)"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"{service} at {address} refused the call: {details}"
    name = code.name.lower().replace("_", " ") if code is not None else "error"
    return f"{service}: {name}: {details}" if details else f"{service}: {name}"
