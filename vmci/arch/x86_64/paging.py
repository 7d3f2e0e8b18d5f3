"""x86_64 paging over guest-physical memory: translation, table walks, the root from CR3.

Paging facts used here (Intel SDM vol. 3 ch. 4): 4-level paging, or 5-level when CR4.LA57
(bit 12) is set; entries are 64-bit, bit 0 present, bit 7 (PS) makes a PDPT entry a 1 GiB
leaf and a PD entry a 2 MiB leaf, bits 12..51 hold the physical address and bit 63 is NX.
With AMD SME/SEV the encryption bit (the kernel's ``sme_mask``) sits inside the address bits
and must be removed before the address is used.  The constants are in
:mod:`vmci.arch.x86_64.consts`; KASLR discovery is in :mod:`vmci.arch.x86_64.kaslr`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from vmci.arch.base import Mapping, PageTables
from vmci.arch.x86_64.consts import ADDR_MASK, PAGE_SIZE, PTE_PRESENT, PTE_PS, PTI_USER_PGD
from vmci.core.memory import PhysicalMemory
from vmci.errors import VirtualReadError, VmciError
from vmci.layouts.qemu_cpu import PAGE_TABLE

ARCH_NAME = "x86_64"
#: the name this module's errors had first; :class:`~vmci.errors.VirtualReadError` everywhere else
TranslationError = VirtualReadError

_SHIFTS = {False: (39, 30, 21, 12), True: (48, 39, 30, 21, 12)}
_LEAF_SHIFTS = (30, 21)  # levels where PS makes a leaf (1 GiB, 2 MiB); 12 is always a leaf
_sub = PAGE_TABLE.subcon
_TABLE = struct.Struct(f"{_sub.fmtstr[0]}{PAGE_TABLE.count}{_sub.fmtstr[1:]}")  # from the declaration
_ENTRY = struct.Struct(_sub.fmtstr)
assert _TABLE.size == PAGE_TABLE.sizeof()


def va_bits(la57: bool) -> int:
    return 57 if la57 else 48


def canonical(lin: int, la57: bool) -> int:
    """Sign-extend a ``va_bits``-bit linear address to 64 bits."""
    bits = va_bits(la57)
    return lin | ((1 << 64) - (1 << bits)) if lin >> (bits - 1) & 1 else lin


def is_canonical(va: int, la57: bool) -> bool:
    bits = va_bits(la57)
    top = va >> (bits - 1)
    return 0 <= va < 1 << 64 and top in (0, (1 << (65 - bits)) - 1)


def top_slot(va: int, la57: bool = False) -> int:
    """Index of ``va``'s entry in the top-level table (PML4 or PML5)."""
    return (va >> _SHIFTS[la57][0]) & 511


def kernel_root(cr3: int, *, mask: int = 0, pti: bool = True) -> int:
    """Physical address of the kernel's top-level table from a CR3 value.

    Bits 0..11 are PCID/flags and the SME bit may be set, so both go.  With page-table
    isolation the kernel allocates each PGD as an 8 KiB-aligned pair, kernel half first and
    the user copy (which maps almost no kernel text) at +4096; a vCPU caught in user mode has
    CR3 pointing at the user copy, so bit 12 is cleared to get back to the kernel PGD.
    """
    root = cr3 & ADDR_MASK & ~mask
    return root & ~PTI_USER_PGD if pti else root


def _entry_addr(entry: int, mask: int, shift: int) -> int:
    return entry & ~mask & ADDR_MASK & ~((1 << shift) - 1)


def lookup(memory: PhysicalMemory, root: int, va: int, la57: bool = False, mask: int = 0) -> Mapping:
    """The whole leaf mapping (4 KiB, 2 MiB or 1 GiB) holding ``va`` through the tables at ``root``;
    raises :class:`~vmci.errors.VirtualReadError`."""
    if not is_canonical(va, la57):
        raise VirtualReadError(f"virtual address {va:#x} is not canonical", vaddr=va)
    table = root & ADDR_MASK & ~mask
    for shift in _SHIFTS[la57]:
        slot = table + ((va >> shift) & 511) * 8
        try:
            (entry,) = _ENTRY.unpack(memory.read(slot, 8))
        except VmciError as exc:
            raise VirtualReadError(f"page table entry for {va:#x} at {slot:#x} unreadable: {exc}",
                                   vaddr=va, paddr=slot) from None
        if not entry & PTE_PRESENT:
            raise VirtualReadError(f"virtual address {va:#x} is not mapped (entry at {slot:#x})",
                                   vaddr=va, paddr=slot)
        if shift == 12 or (shift in _LEAF_SHIFTS and entry & PTE_PS):
            size = 1 << shift
            return Mapping(va & ~(size - 1), _entry_addr(entry, mask, shift), size)
        table = _entry_addr(entry, mask, 12)
    raise AssertionError("unreachable")


def translate(memory: PhysicalMemory, root: int, va: int, la57: bool = False, mask: int = 0) -> int:
    """Physical address of ``va`` through the tables at ``root``; raises
    :class:`~vmci.errors.VirtualReadError`."""
    leaf = lookup(memory, root, va, la57, mask)
    return leaf.pa | (va - leaf.va)


def page_tables(root: int, *, la57: bool = False, mask: int = 0) -> PageTables:
    """The :class:`~vmci.arch.PageTables` of a top-level table at ``root``."""
    return PageTables(ARCH_NAME, root & ADDR_MASK & ~mask, va_bits(la57), 12, mask)


def walk(memory: PhysicalMemory, root: int, start: int = 0, end: int = 1 << 64, la57: bool = False,
         mask: int = 0) -> Iterator[Mapping]:
    """Leaf mappings overlapping ``[start, end)`` in ascending VA order, clipped to that range.

    Whole tables are read at once (and cached for this walk); unreadable tables are skipped.
    """
    bits = va_bits(la57)
    half = 1 << (bits - 1)
    high = (1 << 64) - half  # first canonical address of the upper half
    # canonical ranges -> linear (bits-wide) ranges; canonical order equals linear order
    spans = []
    if start < half:
        spans.append((start, min(end, half)))
    if end > high:
        s = max(start, high)
        spans.append((s - high + half, end - high + half))
    cache: dict[int, tuple[int, ...] | None] = {}
    shifts = _SHIFTS[la57]

    def table(pa: int) -> tuple[int, ...] | None:
        if pa not in cache:
            try:
                cache[pa] = _TABLE.unpack(memory.read(pa, PAGE_SIZE))
            except VmciError:
                cache[pa] = None
        return cache[pa]

    def descend(pa: int, level: int, base: int, lo: int, hi: int) -> Iterator[Mapping]:
        entries = table(pa)
        if entries is None:
            return
        shift = shifts[level]
        first = max(0, (lo - base) >> shift)
        last = min(511, (hi - 1 - base) >> shift)
        for i in [i for i in range(first, last + 1) if entries[i] & PTE_PRESENT]:
            e = entries[i]
            lin = base + (i << shift)
            if shift == 12 or (shift in _LEAF_SHIFTS and e & PTE_PS):
                size = 1 << shift
                pa0 = _entry_addr(e, mask, shift)
                a, b = max(lin, lo), min(lin + size, hi)
                yield Mapping(canonical(a, la57), pa0 + (a - lin), b - a)
            else:
                yield from descend(_entry_addr(e, mask, 12), level + 1, lin, lo, hi)

    for lo, hi in spans:
        if lo < hi:
            yield from descend(root & ADDR_MASK & ~mask, 0, 0, lo, hi)


__all__ = ["TranslationError", "canonical", "is_canonical", "kernel_root", "lookup", "page_tables",
           "top_slot", "translate", "va_bits", "walk"]
