"""Bytes on their way to S3, held as the pieces they came in: a part is never copied whole."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any


class Chunks:
    """Bytes appended piece by piece and kept as they came."""

    def __init__(self, pieces: Sequence[bytes | memoryview] = ()) -> None:
        self.pieces: list[bytes | memoryview] = [p for p in pieces if len(p)]
        self.size = sum(len(p) for p in self.pieces)

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes | memoryview) -> None:
        if len(data):
            self.pieces.append(data)
            self.size += len(data)

    def split(self, size: int) -> tuple[Chunks, Chunks]:
        """The first ``size`` bytes and the rest (views share the pieces' memory)."""
        head, rest, taken = Chunks(), Chunks(), 0
        for piece in self.pieces:
            if taken >= size:
                rest.append(piece)
            elif taken + len(piece) <= size:
                head.append(piece)
            else:
                view = memoryview(piece)
                head.append(view[: size - taken])
                rest.append(view[size - taken :])
            taken += len(piece)
        return head, rest


class Body(io.RawIOBase):
    """Buffers read as one seekable stream, so the HTTP client sends them in chunks.

    Given one bytes object, the client would join it with the request head and queue the rest
    in its transport: two more copies of a whole part. Read in chunks, a part is held once.
    """

    def __init__(self, *pieces: bytes | memoryview) -> None:
        super().__init__()
        self._pieces = [memoryview(p).cast("B") for p in pieces if len(p)]
        self._size = sum(len(p) for p in self._pieces)
        self._position = 0
        # Where the position falls: a piece, and an offset in it.
        self._index = 0
        self._offset = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}
        self._position = min(max(0, base[whence] + offset), self._size)
        self._index, self._offset = 0, self._position
        while self._index < len(self._pieces) and self._offset >= len(self._pieces[self._index]):
            self._offset -= len(self._pieces[self._index])
            self._index += 1
        return self._position

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        written = 0
        while written < len(out) and self._index < len(self._pieces):
            piece = self._pieces[self._index]
            n = min(len(piece) - self._offset, len(out) - written)
            out[written : written + n] = piece[self._offset : self._offset + n]
            written += n
            self._offset += n
            if self._offset == len(piece):
                self._index, self._offset = self._index + 1, 0
        self._position += written
        return written
