"""arm64 stage-1 translation of kernel (``TTBR1_EL1``) addresses over guest-physical memory.

The format (Arm ARM D8; the constants and their sources are in :mod:`vmci.arch.aarch64.consts`):
a granule of ``1 << page_shift`` bytes, ``page_shift - 3`` index bits per level, as many levels as
``va_bits`` needs (4 KiB/48-bit: 4 levels; 64 KiB/42-bit: 2; 64 KiB/52-bit: 3 with a 1024-entry
top table).  Blocks are leaves at level 1 (1 GiB, 4 KiB granule) and level 2 (2 MiB / 32 MiB /
512 MiB).  Kernel pointers may carry a tag in the top byte (KASAN, MTE): bit 55 decides the half,
so an address with bit 55 set is sign-extended from it before the walk (drgn
``untagged_addr_aarch64``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import cache

from vmci.arch.aarch64.consts import (
    DESC_TABLE,
    DESC_TYPE_MASK,
    DESC_VALID,
    OA_MASK_48,
    PAGE_SHIFTS,
    SCTLR_EE,
    TCR_T1SZ_MASK,
    TCR_T1SZ_SHIFT,
    TCR_TG1_SHIFT,
    TG1_SHIFTS,
    TTBR_BADDR_MASK,
)
from vmci.arch.base import Mapping, PageTables
from vmci.core.memory import PhysicalMemory
from vmci.errors import UsageError, VirtualReadError, VmciError

ARCH_NAME = "aarch64"
_U64 = (1 << 64) - 1
#: level shifts where a block descriptor is a leaf, per granule (level 1 of 64 KiB needs FEAT_LPA)
BLOCK_SHIFTS = {12: (30, 21), 14: (25,), 16: (42, 29)}


@cache
def shifts(page_shift: int, va_bits: int) -> tuple[int, ...]:
    """The VA bit each level's index starts at, top level first (4 KiB/48-bit: 39, 30, 21, 12)."""
    if page_shift not in PAGE_SHIFTS:
        raise UsageError(f"no arm64 granule of {1 << page_shift} bytes (4, 16 or 64 KiB)")
    if not page_shift + 4 <= va_bits <= 52:
        raise UsageError(f"no arm64 translation of {va_bits}-bit addresses")
    per = page_shift - 3
    levels = -(-(va_bits - page_shift) // per)
    return tuple(page_shift + per * (levels - 1 - i) for i in range(levels))


def levels(page_shift: int, va_bits: int) -> int:
    """How many table levels a walk of ``va_bits`` addresses with this granule takes."""
    return len(shifts(page_shift, va_bits))


def top_entries(page_shift: int, va_bits: int) -> int:
    """Entries of the top-level table (512 for 4 KiB/48-bit, 64 for 64 KiB/48-bit, 1024 for 64 KiB/52)."""
    return 1 << (va_bits - shifts(page_shift, va_bits)[0])


def page_tables(root: int, *, page_shift: int = 12, va_bits: int = 48,
                byteorder: str = "little") -> PageTables:
    """The :class:`~vmci.arch.PageTables` of a kernel top-level table at physical ``root``."""
    shifts(page_shift, va_bits)  # validates the pair
    return PageTables(ARCH_NAME, root, va_bits, page_shift, 0, byteorder)


def from_registers(ttbr1: int, tcr: int, sctlr: int | None = None, *,
                   byteorder: str = "little") -> PageTables | None:
    """The kernel tables ``TTBR1_EL1`` and ``TCR_EL1`` describe (granule ``TG1``, ``64 - T1SZ`` bits;
    big-endian entries when ``SCTLR_EL1.EE`` is set), or None when ``TG1`` is reserved or ``T1SZ``
    impossible."""
    if sctlr is not None:
        byteorder = "big" if sctlr & SCTLR_EE else "little"
    page_shift = TG1_SHIFTS.get((tcr >> TCR_TG1_SHIFT) & 0b11)
    va_bits = 64 - ((tcr >> TCR_T1SZ_SHIFT) & TCR_T1SZ_MASK)
    if page_shift is None or not page_shift + 4 <= va_bits <= 52:
        return None
    baddr = ttbr1 & TTBR_BADDR_MASK
    if page_shift == 16 and va_bits == 52:  # FEAT_LPA: BADDR[5:2] hold PA[51:48]
        baddr = (baddr & ~0x3C) | ((baddr >> 2) & 0xF) << 48
    return page_tables(baddr & ~0x3F, page_shift=page_shift, va_bits=va_bits, byteorder=byteorder)


def untag(va: int) -> int:
    """``va`` with its top byte restored from bit 55 (a kernel address keeps 0xff)."""
    return va | (0xFF << 56) if va >> 55 & 1 else va & ~(0xFF << 56)


def is_kernel_address(va: int, va_bits: int) -> bool:
    """Does (untagged) ``va`` lie in the ``TTBR1`` half of a ``va_bits``-bit address space?"""
    return 0 <= va <= _U64 and untag(va) >= (1 << 64) - (1 << va_bits)


def _output(desc: int, shift: int, page_shift: int, va_bits: int) -> int:
    """The physical address a descriptor points at (a table, a page or a block of ``1 << shift``)."""
    addr = desc & OA_MASK_48 & ~((1 << shift) - 1)
    if page_shift == 16:  # FEAT_LPA: bits [15:12] are PA[51:48] (RES0 without it)
        addr |= ((desc >> 12) & 0xF) << 48
    elif va_bits == 52:  # FEAT_LPA2: bits [49:48] are PA[49:48], bits [9:8] PA[51:50]
        addr |= desc & (0x3 << 48) | ((desc >> 8) & 0x3) << 50
    return addr


def _is_leaf(desc: int, level: int, shift: int, tables: PageTables, last: int) -> bool | None:
    """True for a page or block, False for a table, None for an invalid descriptor."""
    kind = desc & DESC_TYPE_MASK
    if level == last:
        return True if kind == DESC_TABLE else None
    if kind == DESC_TABLE:
        return False
    if kind == DESC_VALID and shift in BLOCK_SHIFTS[tables.page_shift]:
        return True
    return None


def lookup(memory: PhysicalMemory, tables: PageTables, va: int) -> Mapping:
    """The whole leaf mapping holding kernel address ``va``; raises
    :class:`~vmci.errors.VirtualReadError`."""
    if not is_kernel_address(va, tables.va_bits):
        raise VirtualReadError(f"virtual address {va:#x} is not a kernel (TTBR1) address of a "
                               f"{tables.va_bits}-bit address space", vaddr=va)
    lin = untag(va) & ((1 << tables.va_bits) - 1)
    levels_ = shifts(tables.page_shift, tables.va_bits)
    last = len(levels_) - 1
    table = tables.root
    width = tables.va_bits
    for level, shift in enumerate(levels_):
        slot = table + ((lin >> shift) & ((1 << (width - shift)) - 1)) * 8
        width = shift
        try:
            desc = int.from_bytes(memory.read(slot, 8), "big" if tables.byteorder == "big" else "little")
        except VmciError as exc:
            raise VirtualReadError(f"page table entry for {va:#x} at {slot:#x} unreadable: {exc}",
                                   vaddr=va, paddr=slot) from None
        leaf = _is_leaf(desc, level, shift, tables, last)
        if leaf is None:
            raise VirtualReadError(f"virtual address {va:#x} is not mapped (entry at {slot:#x})",
                                   vaddr=va, paddr=slot)
        if leaf:
            size = 1 << shift  # the leaf keeps va's tag, so it holds va
            return Mapping(va & ~(size - 1), _output(desc, shift, tables.page_shift, tables.va_bits), size)
        table = _output(desc, tables.page_shift, tables.page_shift, tables.va_bits)
    raise AssertionError("unreachable")


def walk(memory: PhysicalMemory, tables: PageTables, start: int = 0, end: int = 1 << 64) -> Iterator[Mapping]:
    """Leaf mappings of the kernel half overlapping ``[start, end)`` in ascending VA order, clipped
    to it.  Whole tables are read at once (and cached for this walk); unreadable tables are skipped."""
    base = (1 << 64) - (1 << tables.va_bits)
    lo, hi = max(start, base) - base, min(end, 1 << 64) - base
    if lo >= hi:
        return
    levels_ = shifts(tables.page_shift, tables.va_bits)
    last = len(levels_) - 1
    order = ">" if tables.byteorder == "big" else "<"
    cache: dict[tuple[int, int], tuple[int, ...] | None] = {}

    def table(pa: int, n: int) -> tuple[int, ...] | None:
        if (pa, n) not in cache:
            try:
                cache[pa, n] = struct.unpack(f"{order}{n}Q", memory.read(pa, 8 * n))
            except VmciError:
                cache[pa, n] = None
        return cache[pa, n]

    def descend(pa: int, level: int, width: int, lin0: int, lo: int, hi: int) -> Iterator[Mapping]:
        shift = levels_[level]
        entries = table(pa, 1 << (width - shift))
        if entries is None:
            return
        first = max(0, (lo - lin0) >> shift)
        last_i = min(len(entries) - 1, (hi - 1 - lin0) >> shift)
        for i in range(first, last_i + 1):
            desc = entries[i]
            if not desc & DESC_VALID:
                continue
            leaf = _is_leaf(desc, level, shift, tables, last)
            if leaf is None:
                continue
            lin = lin0 + (i << shift)
            if leaf:
                size = 1 << shift
                pa0 = _output(desc, shift, tables.page_shift, tables.va_bits)
                a, b = max(lin, lo), min(lin + size, hi)
                yield Mapping(base + a, pa0 + (a - lin), b - a)
            else:
                yield from descend(_output(desc, tables.page_shift, tables.page_shift, tables.va_bits),
                                   level + 1, shift, lin, lo, hi)

    yield from descend(tables.root, 0, tables.va_bits, 0, lo, hi)


__all__ = ["BLOCK_SHIFTS", "from_registers", "is_kernel_address", "levels", "lookup", "page_tables", "shifts",
           "top_entries", "untag", "walk"]
