"""Bounds-checked reads from a migration stream held as one buffer, shared by the section walker
(:mod:`.stream`) and the RAM record reader (:mod:`.ram`)."""

from __future__ import annotations

import struct

from vmci.errors import FormatError
from vmci.layouts import struct_format
from vmci.layouts.migration import RamRecord

U64 = struct_format(RamRecord)  # be64: RAM record headers, RAMBlock lengths
U32 = struct.Struct(">I")  # vmstate's be32 scalar, for fields walked one by one


class Truncated(Exception):
    """The stream ends inside ``what`` (started at buffer position ``offset``)."""

    def __init__(self, offset: int, what: str) -> None:
        super().__init__(what)
        self.offset = offset
        self.what = what


class Cursor:
    """Reads of ``buf``, which holds the stream from file offset ``base`` on."""

    def __init__(self, buf: memoryview, base: int) -> None:
        self.buf = buf
        self.base = base
        self.end = len(buf)

    def fail(self, msg: str, field: str, pos: int) -> FormatError:
        return FormatError(msg, field=field, offset=self.base + pos)

    def need(self, pos: int, n: int, what: str) -> None:
        if pos + n > self.end:
            raise Truncated(pos, what)

    def u32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return int(U32.unpack_from(self.buf, pos)[0])

    def name(self, pos: int, what: str) -> tuple[str, int]:
        """u8 length + bytes at ``pos``: (text, position after)."""
        self.need(pos, 1, what)
        n = self.buf[pos]
        self.need(pos + 1, n, what)
        return bytes(self.buf[pos + 1 : pos + 1 + n]).decode("latin-1"), pos + 1 + n
