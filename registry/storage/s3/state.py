"""The state of a file being written, saved beside it so that any writer can continue it.

One object, ``<key>/.nimbus-writer``: a JSON line with the multipart upload id and its parts,
then the tail (the bytes not yet a part, less than one part) as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from registry.storage.s3.buffers import Body, Chunks

# The writer state of a path lives under it; no name of the registry's layout starts with '.'.
WRITER_STATE = ".nimbus-writer"


def state_key(key: str) -> str:
    return f"{key}/{WRITER_STATE}"


def is_state_key(key: str) -> bool:
    return key.endswith(f"/{WRITER_STATE}")


def file_key(state: str) -> str:
    """The key of the file a state object belongs to."""
    return state.rsplit("/", 1)[0]


@dataclass(slots=True)
class Part:
    number: int
    etag: str
    size: int


@dataclass(slots=True)
class WriterState:
    """What a writer continues from: a multipart upload's parts and the tail not yet a part."""

    upload_id: str | None = None
    parts: list[Part] = field(default_factory=list)
    tail: Chunks = field(default_factory=Chunks)

    @property
    def uploaded(self) -> int:
        return sum(p.size for p in self.parts)

    def encode(self) -> Body:
        header = {
            "upload_id": self.upload_id,
            "parts": [[p.number, p.etag, p.size] for p in self.parts],
        }
        line = json.dumps(header, separators=(",", ":")).encode() + b"\n"
        return Body(line, *self.tail.pieces)

    @classmethod
    def decode(cls, raw: bytes) -> WriterState:
        end = raw.index(b"\n")
        header = json.loads(raw[:end])
        parts = [Part(int(n), str(etag), int(size)) for n, etag, size in header["parts"]]
        return cls(header["upload_id"], parts, Chunks([memoryview(raw)[end + 1 :]]))
