"""The kernel page-table producer: entries, flags, CPU state, and drgn reading through them."""

from __future__ import annotations

import struct

import pytest

from vmci.arch.x86_64.consts import CR0_PE, CR0_PG, CR4_LA57, CR4_PAE, CR4_PGE, START_KERNEL_MAP
from vmci.arch.x86_64.cpu import cpus_from_notes, prstatus_desc, qemu_cpu_desc
from vmci.arch.x86_64.kaslr import decode_idt_gate, kaslr_from_page_tables
from vmci.arch.x86_64.paging import kernel_root, translate, walk
from vmci.core.dump import Note
from vmci.core.memory import Range, SparseMemory
from vmci.errors import UsageError
from vmci.producer.pagetables import (
    GB1,
    KB4,
    MB2,
    PAGE_OFFSET_4,
    PAGE_OFFSET_5,
    KernelTables,
    PageTableBuilder,
    build_kernel_page_tables,
)

RAM_TOP = 0x80000000
POOL = Range(0x100000, 0x300000)
NX = 1 << 63


def guest() -> SparseMemory:
    return SparseMemory([Range(0, 0x9FC00), Range(0x100000, RAM_TOP - 0x100000)])


def raw_leaf(mem: SparseMemory, root: int, va: int, la57: bool, mask: int) -> tuple[int, int]:
    """(raw leaf entry, page size) by a plain hardware-style walk, independent of vmci.arch."""
    table = root
    shifts = (48, 39, 30, 21, 12) if la57 else (39, 30, 21, 12)
    for shift in shifts:
        (e,) = struct.unpack("<Q", mem.read(table + ((va >> shift) & 511) * 8, 8))
        assert e & 1, f"{va:#x} not present at shift {shift}"
        assert e & mask == mask
        if shift == 12 or e & 0x80:
            return e, 1 << shift
        table = e & 0xFFFFFFFFFF000 & ~mask
    raise AssertionError


@pytest.mark.parametrize("la57", [False, True])
def test_layout_and_flags(la57: bool) -> None:
    sme = 1 << 47
    mem = guest()
    kt = build_kernel_page_tables(mem, POOL, kaslr_offset=0x1C000000, phys_base=0x2000000, la57=la57,
                                  sme_mask=sme, split_4k=1, pti=True)
    assert kt.page_offset == (PAGE_OFFSET_5 if la57 else PAGE_OFFSET_4)
    assert kt.text_va == 0xFFFFFFFF81000000 + 0x1C000000
    assert kt.text_pa == 0x1000000 + 0x1C000000 + 0x2000000 == kt.text_va - START_KERNEL_MAP + kt.phys_base
    assert kt.pgd % (2 * KB4) == 0 and kt.user_pgd == kt.pgd + KB4
    assert kt.kernel_phys(kt.swapper_pg_dir) == kt.pgd
    assert kt.cr3 == kt.pgd | sme
    # text: executable 2 MiB pages; data: NX; the tail piece: 4 KiB PTEs
    e, size = raw_leaf(mem, kt.pgd, kt.text_va, la57, sme)
    assert size == MB2 and not e & NX and e & 0x100  # global
    e, size = raw_leaf(mem, kt.pgd, kt.text_va + kt.text_size, la57, sme)
    assert size == MB2 and e & NX
    e, size = raw_leaf(mem, kt.pgd, kt.text_va + kt.image_size - KB4, la57, sme)
    assert size == KB4 and e & NX
    # direct map: 4 KiB at the unaligned start of RAM, 2 MiB up to 1 GiB, then 1 GiB pages
    assert raw_leaf(mem, kt.pgd, kt.direct_va(0x100000), la57, sme)[1] == KB4
    assert raw_leaf(mem, kt.pgd, kt.direct_va(0x200000), la57, sme)[1] == MB2
    assert raw_leaf(mem, kt.pgd, kt.direct_va(0x40000000), la57, sme)[1] == GB1
    assert raw_leaf(mem, kt.pgd, kt.direct_va(0x9E000), la57, sme)[1] == KB4
    with pytest.raises(AssertionError):
        raw_leaf(mem, kt.pgd, kt.direct_va(0x9F000), la57, sme)  # the partial page is not mapped
    # every present entry of every table carries the SME bit
    for entries in kt.builder.tables.values():
        assert all(e & sme for e in entries if e & 1)
    # the user copy maps the cpu_entry_area IDT and nothing of the kernel image
    assert [m.va for m in walk(mem, kt.user_pgd or 0, la57=la57, mask=sme)] == [kt.idt_va]


def test_direct_map_options() -> None:
    mem = guest()
    base = 0xFFFF9A0000000000  # a KASLR-randomised PAGE_OFFSET
    kt = build_kernel_page_tables(mem, POOL, direct_map_page=MB2, page_offset=base)
    direct = list(walk(mem, kt.pgd, base, base + (1 << 40)))
    assert {m.size for m in direct} == {KB4, MB2}
    assert sum(m.size for m in direct) == 0x9F000 + RAM_TOP - 0x100000
    assert all(m.va - base == m.pa for m in direct)


def test_cpu_state_is_consistent() -> None:
    mem = guest()
    kt = build_kernel_page_tables(mem, POOL, kaslr_offset=0x8000000, la57=True)
    cpu = kt.cpu_state(0)
    kt.flush()
    assert cpu.cr0 is not None and cpu.cr4 is not None and cpu.cr3 == kt.cr3
    assert cpu.cr0 & (CR0_PG | CR0_PE) == CR0_PG | CR0_PE
    assert cpu.cr4 & (CR4_PAE | CR4_PGE | CR4_LA57) == CR4_PAE | CR4_PGE | CR4_LA57
    root = kernel_root(cpu.cr3)
    rip = cpu.regs["rip"]
    assert kt.text_va <= rip < kt.text_va + kt.text_size
    assert translate(mem, root, rip, True) == kt.kernel_phys(rip)
    assert cpu.idt_base is not None and cpu.gdt_base is not None
    gate0 = mem.read(translate(mem, root, cpu.idt_base, True), 16)
    assert decode_idt_gate(gate0) == (kt.handler_va, True)
    gdt = mem.read(translate(mem, root, cpu.gdt_base, True), 8 * 7)
    assert struct.unpack_from("<Q", gdt, 0x10)[0] == 0x00AF9B000000FFFF  # __KERNEL_CS, 64-bit
    # through QEMU's notes and back
    notes = [Note("CORE", 1, prstatus_desc(cpu, "x86_64")), Note("QEMU", 0, qemu_cpu_desc(cpu, "x86_64"))]
    (back,) = cpus_from_notes(notes, "x86_64")
    assert back.regs["rip"] == rip and back.cr3 == cpu.cr3 and back.idt_base == cpu.idt_base
    assert not back.warnings
    assert kaslr_from_page_tables(mem, [back]).kerneloffset == 0x8000000


@pytest.mark.parametrize("kw", [
    {"kaslr_offset": 0x1000},
    {"phys_base": 0x100000},
    {"kaslr_offset": 0x3F000000},                # image beyond 0xffffffffc0000000
    {"phys_base": -0x2000000},                   # text PA below 0
    {"phys_base": 0x7F000000 - 0x1000000},       # image PA beyond RAM
    {"phys_base": -0x1000000},                   # image at PA 0 covers the 0xa0000 hole
    {"sme_mask": 3 << 46},
    {"image_size": 0x2001000},
    {"pti": True, "pgd_offset": 0x1C01000},
])
def test_bad_parameters(kw: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        build_kernel_page_tables(guest(), POOL, **kw)  # type: ignore[arg-type]


def test_builder_errors() -> None:
    mem = guest()
    with pytest.raises(UsageError, match="overlaps the kernel image"):
        build_kernel_page_tables(mem, Range(0x1800000, 0x100000))
    with pytest.raises(UsageError, match="not inside guest RAM"):
        build_kernel_page_tables(mem, Range(0x80000, 0x100000))
    b = PageTableBuilder(mem, Range(0x100000, 3 * KB4))
    root = b.alloc()
    b.map_page(root, 0xFFFFFFFF81000000, 0x1000000, MB2)
    with pytest.raises(UsageError, match="already mapped"):
        b.map_page(root, 0xFFFFFFFF81000000, 0x1000000, MB2)
    with pytest.raises(UsageError, match="inside a large page"):
        b.map_page(root, 0xFFFFFFFF81001000, 0x1001000, KB4)
    with pytest.raises(UsageError, match="alignment"):
        b.map_page(root, 0xFFFFFFFF81001000, 0x1001000, MB2)
    with pytest.raises(UsageError, match="exhausted"):
        b.map_page(root, 0x1000, 0x1000, KB4)


# --- drgn reads through the generated tables -----------------------------------------------


def drgn_program(mem: SparseMemory, kt: KernelTables):  # type: ignore[no-untyped-def]
    drgn = pytest.importorskip("drgn", reason="drgn not installed")
    keys = {k: v for k, v in kt.vmcoreinfo_keys().items() if k != "NUMBER(sme_mask)"}
    text = "OSRELEASE=6.1.0-vmci-test\nPAGESIZE=4096\n" + "".join(f"{k}={v}\n" for k, v in keys.items())
    platform = drgn.Platform(drgn.Architecture.X86_64,
                             drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    prog = drgn.Program(platform, vmcoreinfo=text)

    def read(address: int, count: int, offset: int, physical: bool) -> bytes:
        return mem.read(address, count)

    for r in mem.ranges:
        prog.add_memory_segment(r.start, r.size, read, True)
    prog.set_linux_kernel_custom(text, False)
    return drgn, prog


@pytest.mark.interop
@pytest.mark.parametrize("la57", [False, True])
@pytest.mark.parametrize("pti", [False, True])
def test_drgn_reads_through_tables(la57: bool, pti: bool) -> None:
    mem = guest()
    kt = build_kernel_page_tables(mem, POOL, kaslr_offset=0x2C000000, phys_base=-346030080, la57=la57,
                                  pti=pti, split_4k=1)
    uts = kt.text_va + 0x1600000 + 0x10  # an init_uts_ns-like string in kernel data
    mem.write(kt.kernel_phys(uts), b"Linux\0vmci-guest\0")
    tail = kt.text_va + kt.image_size - 0x802  # in the 4 KiB-mapped tail, across a page edge
    mem.write(kt.kernel_phys(tail), b"4k tail bytes")
    high = 0x50000123  # inside a 1 GiB direct-map page
    mem.write(high, b"direct map")
    kt.flush()
    drgn, prog = drgn_program(mem, kt)
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    assert prog.read(uts, 17) == b"Linux\0vmci-guest\0"
    assert prog.read(tail, 13) == b"4k tail bytes"
    assert prog.read(kt.direct_va(high), 10) == b"direct map"
    assert prog.read(kt.direct_va(kt.kernel_phys(uts)), 5) == b"Linux"
    assert prog.read(kt.idt_va, 16) == mem.read(kt.idt_pa, 16)
    with pytest.raises(drgn.FaultError):
        prog.read(kt.text_va - KB4, 1)
    # drgn's view of the mappings agrees with vmci's walk (sampled; page tables left alone)
    image = Range(kt.text_pa, kt.image_size)
    for m in list(walk(mem, kt.pgd, la57=la57))[::37]:
        last = m.pa + m.size - 8
        if last in POOL or last in image:
            continue
        mem.write(last, m.va.to_bytes(8, "little"))
        assert prog.read(m.va + m.size - 8, 8) == m.va.to_bytes(8, "little")
