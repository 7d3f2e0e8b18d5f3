"""arm64 translation for every granule and VA size, both byte orders: the walker and the lookup give
back exactly what the table builder mapped (the builder's own record is the oracle)."""

from __future__ import annotations

import pytest

from vmci import arch
from vmci.arch.aarch64.consts import kimage_vaddr, page_offset
from vmci.arch.aarch64.paging import from_registers, levels, lookup, page_tables, top_entries, walk
from vmci.arch.base import Mapping
from vmci.core.memory import Range, SparseMemory
from vmci.errors import VirtualReadError
from vmci.producer.pagetables_arm64 import Arm64TableBuilder

MIB = 1 << 20
RAM = Range(0x40000000, 64 * MIB)
HIGH = Range(1 << 48, 32 * MIB)  # beyond 48 bits: FEAT_LPA / LPA2 output addresses
#: (page_shift, va_bits) -> levels, as makedumpfile's calculate_plat_config and the Arm ARM give them
CASES = {(12, 39): 3, (12, 48): 4, (12, 52): 5, (14, 36): 2, (14, 47): 3, (14, 48): 4, (14, 52): 4,
         (16, 42): 2, (16, 48): 3, (16, 52): 3}


Built = tuple[SparseMemory, int, list[Mapping], Arm64TableBuilder]


def _build(page_shift: int, va_bits: int, order: str) -> Built:
    g = 1 << page_shift
    ranges = [RAM, HIGH] if va_bits == 52 else [RAM]
    mem = SparseMemory(ranges)
    pool = Range(RAM.start, 16 * MIB)
    b = Arm64TableBuilder(mem, pool, page_shift=page_shift, va_bits=va_bits, byteorder=order)
    root = b.adopt(b.alloc(table=False), root=True)
    image = kimage_vaddr(va_bits) + 0x10000 // g * g + g * 16
    image -= image % g
    b.map_range(root, image, RAM.start + 32 * MIB, 8 * MIB)  # pages up to a block boundary, then blocks
    lin = page_offset(va_bits) + 0x40000000
    b.map_range(root, lin, RAM.start, 32 * MIB)
    b.map_page(root, kimage_vaddr(va_bits) - 64 * g, RAM.start + 40 * MIB + 3 * g, g)
    if va_bits == 52:
        b.map_page(root, kimage_vaddr(va_bits) - 8 * g, HIGH.start + 5 * g, g)
    if page_shift == 16:  # a 512 MiB level-2 block (its target need not be in the dump)
        b.map_page(root, page_offset(va_bits) + (1 << 32), 1 << 32, 512 * MIB)
    b.flush()
    return mem, root, b.mappings(root), b


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize(("page_shift", "va_bits"), sorted(CASES))
def test_walk_and_lookup_give_back_the_builders_mappings(page_shift: int, va_bits: int, order: str) -> None:
    mem, root, built, _ = _build(page_shift, va_bits, order)
    tables = page_tables(root, page_shift=page_shift, va_bits=va_bits, byteorder=order)
    assert levels(page_shift, va_bits) == CASES[page_shift, va_bits]
    assert list(walk(mem, tables)) == built
    assert any(m.size > 1 << page_shift for m in built)  # blocks were used and read back
    a64 = arch.get("aarch64")
    for m in built:
        for off in (0, m.size // 2, m.size - 8):
            assert lookup(mem, tables, m.va + off) == m
            assert a64.translate(mem, tables, m.va + off) == m.pa + off
    if va_bits == 52:
        assert any(m.pa >= 1 << 48 for m in built)
    first = built[0]
    tagged = (first.va & ~(0xFF << 56)) | (0xF4 << 56)  # a KASAN/MTE tag in the top byte, bit 55 set
    assert a64.translate(mem, tables, tagged + 8) == first.pa + 8
    with pytest.raises(VirtualReadError, match="not mapped"):
        lookup(mem, tables, first.va - (1 << page_shift) * 1024)
    with pytest.raises(VirtualReadError, match="not a kernel"):
        lookup(mem, tables, 0x400000)
    # a clipped walk and the KernelMemory-style read across leaves
    lo, hi = built[0].va + 8, built[1].va + 16
    assert sum(m.size for m in walk(mem, tables, lo, hi)) == sum(
        min(m.va + m.size, hi) - max(m.va, lo) for m in built if m.va < hi and m.va + m.size > lo)


def test_wrong_byte_order_reads_nothing() -> None:
    mem, root, built, _ = _build(12, 48, "big")
    little = page_tables(root, page_shift=12, va_bits=48, byteorder="little")
    assert list(walk(mem, little)) != built


def test_top_table_sizes_and_registers() -> None:
    sizes = (top_entries(12, 48), top_entries(16, 48), top_entries(16, 52), top_entries(16, 42))
    assert sizes == (512, 64, 1024, 8192)
    # TCR_EL1 of Debian's 6.1 guest under QEMU: T1SZ 16, TG1 4 KiB; TTBR1 with ASID 2
    t = from_registers(0x0002000041858000, 0x00500074B5503510)
    assert t is not None and (t.root, t.va_bits, t.page_shift, t.byteorder) == (0x41858000, 48, 12, "little")
    t64 = from_registers(0x41850000, (0b11 << 30) | (12 << 16), 1 << 25)  # 64 KiB, 52-bit, SCTLR.EE
    assert t64 is not None and (t64.va_bits, t64.page_shift, t64.byteorder) == (52, 16, "big")
    assert from_registers(0x41850000, 0b00 << 30) is None  # TG1 0 is reserved
