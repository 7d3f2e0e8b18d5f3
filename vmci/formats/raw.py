"""Raw physical-memory images (``/dev/mem`` copies, ``pmemsave``, LiME-less captures): the
file's byte 0 is physical address ``base``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from vmci.core.dump import Dump
from vmci.core.headers import RawHeader
from vmci.core.memory import Extent, PhysicalMemory, Range, Run, is_zero
from vmci.formats.source import FileSource


class RawMemory(PhysicalMemory):
    def __init__(self, src: FileSource, base: int = 0) -> None:
        self.src = src
        self.base = base
        self._ranges = [Range(base, src.size)] if src.size else []

    @property
    def ranges(self) -> Sequence[Range]:
        return self._ranges

    def extent(self, paddr: int, limit: int) -> Extent:
        off = paddr - self.base
        if off < 0:
            return Extent(None, min(limit, -off), "hole")
        if off >= self.src.size:
            return Extent(None, limit, "hole")
        take = min(limit, self.src.size - off)
        return Extent(self.src.view(off, take), take)

    def runs(self, start: int = 0, end: int | None = None) -> Iterator[Run]:
        # the file's holes read as zeros: a sparse image costs what it stores
        lo = max(start, self.base)
        hi = self.base + self.src.size if end is None else min(end, self.base + self.src.size)
        pos = lo
        for off, n in self.src.data_runs(lo - self.base, hi - lo):
            if self.base + off > pos:
                yield Run(pos, self.base + off - pos, None, True)
            yield Run(self.base + off, n)
            pos = self.base + off + n
        if pos < hi:
            yield Run(pos, hi - pos, None, True)


def read_raw(src: FileSource, path: Path, base: int = 0) -> Dump:
    return Dump(
        path=path,
        format="raw",
        description=f"raw memory image at physical {base:#x}",
        memory=RawMemory(src, base),
        header=RawHeader(base),
        _closers=[src],
    )


def write_raw(out: BinaryIO, memory: PhysicalMemory, base: int = 0, end: int | None = None) -> int:
    """Write ``[base, end)`` of ``memory`` as a raw image; holes become file holes (zeros)."""
    end = end if end is not None else (memory.ranges[-1].end if memory.ranges else base)
    for addr, buf in memory.chunks(base, end):
        if is_zero(buf):
            continue
        out.seek(addr - base)
        out.write(buf)
    out.truncate(max(0, end - base))
    return end - base
