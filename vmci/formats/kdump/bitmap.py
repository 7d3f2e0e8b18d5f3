"""PFN bitmaps as kdump stores them: bit ``n`` is bit ``n % 8`` (LSB first) of byte ``n // 8``.

The 1st bitmap marks the PFNs that are RAM, the 2nd those whose page is in the file.  The
page-descriptor index of a PFN is the number of set bits below it in the 2nd bitmap; a rank
table (one count per 4096 PFNs) makes that O(1) without holding the descriptors in memory.
:class:`PfnBitmap` is the writer's input for pages to leave out: 64 M PFNs (256 GiB) take 8 MiB,
where a set of PFNs would take gigabytes.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vmci.core.memory import Buffer
from vmci.formats.kdump.header import KdumpInfo
from vmci.formats.source import Source

RANK_SHIFT = 12  # one rank entry per 4096 PFNs (512 bitmap bytes)
RELEASE_STEP = 1 << 20  # bitmap bytes counted between releases
_RUN_TOKENS = re.compile(rb"\xff+|\x00+|[\x01-\xfe]")
_NONZERO_RUNS = re.compile(rb"[^\x00]+")


def bit_runs(bitmap: Buffer, nbits: int, lo: int = 0) -> Iterator[tuple[int, int]]:
    """Yield ``(first, end)`` runs of set bits (LSB first in each byte) below ``nbits``."""
    start = -1
    for m in _RUN_TOKENS.finditer(bitmap, lo >> 3, (nbits + 7) >> 3):
        tok = m.group()
        base = m.start() * 8
        if tok[0] == 0xFF:
            if start < 0:
                start = base
        elif tok[0] == 0:
            if start >= 0:
                yield start, min(base, nbits)
                start = -1
        else:
            byte = tok[0]
            for bit in range(min(8, nbits - base)):  # bits past nbits (the last byte's tail) are not PFNs
                if byte >> bit & 1:
                    if start < 0:
                        start = base + bit
                elif start >= 0:
                    yield start, base + bit
                    start = -1
    if start >= 0:
        end = min((((nbits + 7) >> 3) * 8), nbits)
        if end > start:
            yield start, end


def set_bits(bitmap: bytearray, lo: int, hi: int) -> None:
    """Set bits ``[lo, hi)`` (LSB first), whole bytes at a time."""
    while lo < hi and lo & 7:
        bitmap[lo >> 3] |= 1 << (lo & 7)
        lo += 1
    full_end = hi & ~7
    if lo < full_end:
        bitmap[lo >> 3 : full_end >> 3] = b"\xff" * ((full_end - lo) >> 3)
        lo = full_end
    while lo < hi:
        bitmap[lo >> 3] |= 1 << (lo & 7)
        lo += 1


def clear_masked(bitmap: bytearray, mask: Buffer) -> None:
    """Clear in ``bitmap`` every bit set in ``mask`` (``bitmap &= ~mask``; ``mask`` may be shorter)."""
    n = min(len(bitmap), len(mask))
    if n:
        kept = int.from_bytes(bitmap[:n], "little") & ~int.from_bytes(mask[:n], "little")
        bitmap[:n] = kept.to_bytes(n, "little")


class PfnBitmap:
    """A set of PFNs below ``nbits``, as a kdump-style bitmap (64 M PFNs take 8 MiB)."""

    def __init__(self, nbits: int, bits: Buffer | None = None) -> None:
        self.nbits = nbits
        size = (nbits + 7) >> 3
        self.bits = bytearray(bits[:size]) if bits is not None else bytearray(size)
        if len(self.bits) < size:
            self.bits.extend(bytes(size - len(self.bits)))

    @classmethod
    def from_pfns(cls, pfns: Iterable[int], nbits: int) -> PfnBitmap:
        """The PFNs of ``pfns`` below ``nbits`` (others cannot be in a dump of ``nbits`` PFNs)."""
        out = cls(nbits)
        bits = out.bits
        for pfn in pfns:
            if 0 <= pfn < nbits:
                bits[pfn >> 3] |= 1 << (pfn & 7)
        return out

    @classmethod
    def from_bools(cls, flags: Any) -> PfnBitmap:
        """One flag per PFN: a numpy bool array, or any buffer of 0/1 bytes."""
        if hasattr(flags, "dtype"):  # numpy: the caller has it loaded, so this import is free
            import numpy as np

            arr = np.asarray(flags, dtype=bool)
            return cls(len(arr), np.packbits(arr, bitorder="little").tobytes())
        view = memoryview(flags).cast("B")
        out = cls(len(view))
        for m in _NONZERO_RUNS.finditer(view):
            set_bits(out.bits, m.start(), m.end())
        return out

    def add(self, pfn: int) -> None:
        if not 0 <= pfn < self.nbits:
            raise IndexError(f"PFN {pfn:#x} is outside the bitmap ({self.nbits:#x} PFNs)")
        self.bits[pfn >> 3] |= 1 << (pfn & 7)

    def __contains__(self, pfn: object) -> bool:
        if not isinstance(pfn, int) or not 0 <= pfn < self.nbits:
            return False
        return bool(self.bits[pfn >> 3] >> (pfn & 7) & 1)

    def __len__(self) -> int:
        return int.from_bytes(self.bits, "little").bit_count()

    def runs(self) -> Iterator[tuple[int, int]]:
        """``(first, end)`` runs of PFNs in the set."""
        return bit_runs(self.bits, self.nbits)


#: What ``write_kdump(exclude=...)`` takes: a :class:`PfnBitmap`, a packed bitmap (bytes), a numpy
#: bool array with one flag per PFN, or an iterable of PFNs.
Exclusion = PfnBitmap | bytes | bytearray | memoryview | Iterable[int]


def exclusion_mask(exclude: Exclusion, nbits: int) -> Buffer:
    """The packed bitmap of an :data:`Exclusion`; PFNs of an iterable at or above ``nbits`` are
    ignored (the bits of a bitmap there never meet a page)."""
    if isinstance(exclude, PfnBitmap):
        return exclude.bits
    if isinstance(exclude, bytes | bytearray | memoryview):
        return memoryview(exclude).cast("B")
    if hasattr(exclude, "dtype"):
        return PfnBitmap.from_bools(exclude).bits
    return PfnBitmap.from_pfns(exclude, nbits).bits


def bitmap_areas(info: KdumpInfo) -> list[tuple[int, int]]:
    """``(offset, size)`` in the file of the 1st and 2nd bitmaps (one area when the file stores one)."""
    if info.two_bitmaps:
        half = info.bitmap_len // 2
        return [(info.bitmap_offset, half), (info.bitmap_offset + half, half)]
    return [(info.bitmap_offset, info.bitmap_len)]


def read_bitmaps(src: Source, info: KdumpInfo) -> tuple[Buffer, Buffer]:
    """The 1st and 2nd bitmaps of one file (the same buffer when the file stores one): views of
    the mapped file where the source allows, not copies (a 512 GiB guest's bitmaps are 32 MiB)."""
    areas = bitmap_areas(info)
    first = src.view(*areas[0])
    return first, src.view(*areas[-1]) if len(areas) > 1 else first


class RankIndex:
    """Counts of set bits below any bit of a bitmap, in O(1)."""

    def __init__(self, bitmap: Buffer, nbits: int,
                 release: Callable[[int, int], None] | None = None) -> None:
        """``release(offset, n)`` is called behind the count every :data:`RELEASE_STEP` bytes
        (a mapped bitmap's pages leave the process)."""
        self.bitmap = bitmap
        step = 1 << (RANK_SHIFT - 3)
        table = array("Q", [0])
        total = 0
        done = 0
        nbytes = (nbits + 7) >> 3
        for i in range(0, nbytes, step):
            total += int.from_bytes(bitmap[i : i + step], "little").bit_count()
            table.append(total)
            if release is not None and i + step - done >= RELEASE_STEP:
                release(done, i + step - done)
                done = i + step
        if release is not None and nbytes > done:
            release(done, nbytes - done)
        self._table = table

    def rank(self, pfn: int) -> int:
        """Number of set bits below ``pfn``."""
        bm = self.bitmap
        blk = pfn >> RANK_SHIFT
        base = blk << (RANK_SHIFT - 3)
        byte = pfn >> 3
        table = self._table
        n = table[min(blk, len(table) - 1)] + int.from_bytes(bm[base:byte], "little").bit_count()
        if pfn & 7 and byte < len(bm):
            n += (bm[byte] & ((1 << (pfn & 7)) - 1)).bit_count()
        return n
