"""The records of a stream's ``ram`` section, read into one compact page index per RAMBlock.

Each :class:`RamBlock` keeps an ``array('q')`` with, for each target page, the file offset of the
latest copy of its data (a page re-sent in a later iteration overwrites the entry), ``0`` for a
ZERO record and ``-1`` for a page the stream never sent.  Nothing of RAM is copied.  Records are
``be64 offset|flags``; the flags live below the target page size (QEMU migration/ram.c).
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

from vmci.errors import UnsupportedError
from vmci.formats.migration.cursor import U64, Cursor, Truncated
from vmci.layouts.migration import (
    RAM_FLAG_NAMES,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_ZERO,
)

ZERO_PAGE = 0  # index entry: the page was sent as a ZERO record
ABSENT = -1  # index entry: the stream never sent the page


@dataclass
class RamBlock:
    """One RAMBlock of the stream: its name, ``used_length`` and page index."""

    name: str
    size: int
    index: array
    npages: int

    def counts(self) -> tuple[int, int, int]:
        """(pages with data, zero pages, pages never sent)."""
        zero = self.index.count(ZERO_PAGE)
        absent = self.index.count(ABSENT) + self.npages - len(self.index)
        return self.npages - zero - absent, zero, absent


class RamReader(Cursor):
    """Reads the body of each ``ram`` section (START, PART, END) into ``blocks``.

    ``page_size`` and ``ignore_shared`` (the ``x-ignore-shared`` capability: each block in the
    MEM_SIZE list carries its guest address too) come from the stream's configuration.
    """

    def __init__(self, buf: memoryview, base: int, blocks: dict[str, RamBlock]) -> None:
        super().__init__(buf, base)
        self.blocks = blocks
        self.page_size = 4096
        self.ignore_shared = False
        self.records = 0
        self.last_block: RamBlock | None = None

    def read(self, pos: int) -> int:
        """Read records from ``pos`` up to and including EOS; return the position after it."""
        buf, end, base = self.buf, self.end, self.base
        ps = self.page_size
        mask = ps - 1
        shift = ps.bit_length() - 1
        unpack = U64.unpack_from
        block = self.last_block
        idx = block.index if block else array("q")
        page_cont = RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE
        zero_cont = RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE
        records = 0
        try:
            while True:
                # fast path: a page or zero page of the block the previous record named
                try:
                    value = unpack(buf, pos)[0]
                except struct.error:
                    raise Truncated(pos, "a RAM record") from None
                flags = value & mask
                if flags == page_cont:
                    data = pos + 8
                    if data + ps > end:
                        raise Truncated(pos, "a RAM page")
                    try:
                        idx[(value ^ flags) >> shift] = base + data
                    except IndexError:
                        self._grow(block, value ^ flags, pos)
                        continue
                    pos = data + ps
                    records += 1
                    continue
                if flags == zero_cont and pos + 9 <= end and not buf[pos + 8]:
                    try:
                        idx[(value ^ flags) >> shift] = ZERO_PAGE
                    except IndexError:
                        self._grow(block, value ^ flags, pos)
                        continue
                    pos += 9
                    records += 1
                    continue
                if flags & ~RAM_SAVE_FLAG_CONTINUE == RAM_SAVE_FLAG_EOS:
                    return pos + 8
                if flags == RAM_SAVE_FLAG_MEM_SIZE:
                    pos = self._mem_size(pos + 8, value ^ flags)
                    continue
                pos, block = self._record(pos, value, flags, block)
                idx = block.index if block else idx
                records += 1
        finally:
            self.last_block = block
            self.records += records

    def _grow(self, block: RamBlock | None, addr: int, rec: int) -> None:
        """Make room in ``block``'s index for ``addr`` (it starts as long as the stream can fill)."""
        if block is None:
            raise self.fail("RAM record continues no RAMBlock", "RAM_SAVE_FLAG_CONTINUE", rec)
        pg = addr // self.page_size
        if pg >= block.npages:
            raise self.fail(
                f"RAM page offset {addr:#x} is beyond RAMBlock {block.name!r} ({block.size:#x} bytes)",
                "RAM record addr",
                rec,
            )
        block.index.extend(array("q", [ABSENT]) * (min(block.npages, 2 * pg + 1) - len(block.index)))

    def _record(self, rec: int, value: int, flags: int,
                block: RamBlock | None) -> tuple[int, RamBlock | None]:
        """One RAM record off the fast path: (position after it, current block)."""
        buf, end = self.buf, self.end
        pos = rec + 8
        kind = flags & ~RAM_SAVE_FLAG_CONTINUE
        addr = value ^ flags
        if kind not in (RAM_SAVE_FLAG_PAGE, RAM_SAVE_FLAG_ZERO):
            known = [n for bit, n in RAM_FLAG_NAMES.items() if kind & bit]
            if known:
                raise UnsupportedError(
                    f"RAM encoding {', '.join(known)} is not supported (flags {flags:#x})",
                    field="RAM record flags",
                    offset=self.base + rec,
                )
            raise self.fail(f"unknown RAM record flags {flags:#x}", "RAM record flags", rec)
        if not flags & RAM_SAVE_FLAG_CONTINUE:
            name, pos = self.name(pos, "a RAM record")
            block = self.blocks.get(name)
            if block is None:
                raise self.fail(f"RAM record names unknown RAMBlock {name!r}", "RAMBlock idstr", rec)
        elif block is None:
            raise self.fail("RAM record continues no RAMBlock", "RAM_SAVE_FLAG_CONTINUE", rec)
        pg = addr >> (self.page_size.bit_length() - 1)
        if pg >= len(block.index):
            self._grow(block, addr, rec)
        if kind == RAM_SAVE_FLAG_PAGE:
            if pos + self.page_size > end:
                raise Truncated(rec, f"a RAM page of {block.name!r}")
            block.index[pg] = self.base + pos
            return pos + self.page_size, block
        self.need(pos, 1, "a ZERO record")
        if buf[pos]:
            raise UnsupportedError(
                f"ZERO record with fill byte {buf[pos]:#04x} (pre-2.x streams)",
                field="RAM_SAVE_FLAG_ZERO",
                offset=self.base + pos,
            )
        block.index[pg] = ZERO_PAGE
        return pos + 1, block

    def _mem_size(self, pos: int, total: int) -> int:
        """The MEM_SIZE block list: ``total`` bytes of RAMBlocks, each ``idstr`` + ``used_length``."""
        left = total
        while left > 0:
            name, pos = self.name(pos, "the RAMBlock list")
            self.need(pos, 8, "the RAMBlock list")
            size = U64.unpack_from(self.buf, pos)[0]
            pos += 8 + (8 if self.ignore_shared else 0)
            if size > left:
                raise self.fail(
                    f"RAMBlock {name!r} of {size:#x} bytes exceeds the announced total {total:#x}",
                    "MEM_SIZE used_length",
                    pos - 8,
                )
            left -= size
            npages = -(-size // self.page_size)
            old = self.blocks.get(name)
            if old is not None:
                if old.size != size:
                    raise self.fail(f"RAMBlock {name!r} changed size", "MEM_SIZE used_length", pos - 8)
                continue
            # allocate no more entries than the rest of the stream could fill (9 bytes a page)
            have = min(npages, (self.end - pos) // 9 + 1)
            self.blocks[name] = RamBlock(name, size, array("q", [ABSENT]) * have, npages)
        return pos
