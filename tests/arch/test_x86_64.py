"""x86_64 translation, table walks and KASLR discovery over generated kernel page tables."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmci.arch import Mapping
from vmci.arch.x86_64.consts import DEFAULT_TEXT, START_KERNEL_MAP
from vmci.arch.x86_64.kaslr import kaslr_from_page_tables
from vmci.arch.x86_64.paging import TranslationError, kernel_root, page_tables, translate, walk
from vmci.core.dump import CpuState
from vmci.core.memory import Range, SparseMemory
from vmci.errors import FormatError, MemoryReadError, NotFoundError
from vmci.kernel.symbols import parse_system_map
from vmci.kernel.vmem import KernelMemory
from vmci.producer.pagetables import KB4, MB2, KernelTables, build_kernel_page_tables

RAM_TOP = 0x80000000  # 2 GiB, sparse: only written pages cost memory
POOL = Range(0x100000, 0x300000)
IMAGE = 0x2000000


def guest() -> SparseMemory:
    return SparseMemory([Range(0, 0x9FC00), Range(0x100000, RAM_TOP - 0x100000)])


def build(**kw: object) -> tuple[SparseMemory, KernelTables]:
    mem = guest()
    return mem, build_kernel_page_tables(mem, POOL, **kw)  # type: ignore[arg-type]


# --- translation over a hand-written table (independent of the producer) ---------------


def test_translate_hand_built_tables() -> None:
    mem = SparseMemory([Range(0, 0x800000)])
    pgd, pud, pmd, pt = 0x1000, 0x2000, 0x3000, 0x4000
    sme = 1 << 47
    va2m = 0xFFFFFFFF81000000  # pgd 511, pud 510, pmd 8
    mem.write(pgd + 511 * 8, struct.pack("<Q", pud | 3 | sme))
    mem.write(pud + 510 * 8, struct.pack("<Q", pmd | 3 | sme))
    # 2 MiB leaf with NX and the PAT bit (12), which is not an address bit in a large page
    mem.write(pmd + 8 * 8, struct.pack("<Q", 0x600000 | 0x83 | 1 << 12 | 1 << 63 | sme))
    mem.write(pmd + 9 * 8, struct.pack("<Q", pt | 3 | sme))
    mem.write(pt + 5 * 8, struct.pack("<Q", 0x7000 | 3 | 1 << 63 | sme))
    mem.write(pud + 0 * 8, struct.pack("<Q", 0x40000000 | 0x83 | sme))  # 1 GiB leaf
    assert translate(mem, pgd | sme, va2m + 0x1234, mask=sme) == 0x601234
    assert translate(mem, pgd, va2m + MB2 + 5 * KB4 + 7, mask=sme) == 0x7007
    assert translate(mem, pgd, 0xFFFFFF8000000000 + 0x12345678, mask=sme) == 0x40000000 + 0x12345678
    # without the mask the SME bit leaks into the address
    with pytest.raises(MemoryReadError):
        translate(mem, pgd, va2m)
    with pytest.raises(TranslationError) as ei:
        translate(mem, pgd, va2m + MB2 + 6 * KB4, mask=sme)
    assert ei.value.vaddr == va2m + MB2 + 6 * KB4 and ei.value.paddr == pt + 6 * 8
    with pytest.raises(TranslationError, match="not canonical"):
        translate(mem, pgd, 0x0000800000000000, mask=sme)
    got = list(walk(mem, pgd, mask=sme))
    assert got == [Mapping(0xFFFFFF8000000000, 0x40000000, 1 << 30),
                   Mapping(va2m, 0x600000, MB2), Mapping(va2m + MB2 + 5 * KB4, 0x7000, KB4)]
    # clipping to [start, end)
    assert list(walk(mem, pgd, va2m + 0x1000, va2m + 0x3000, mask=sme)) == [
        Mapping(va2m + 0x1000, 0x601000, 0x2000)]


def test_unreadable_table() -> None:
    mem = SparseMemory([Range(0, 0x10000)])
    mem.write(0x1000 + 511 * 8, struct.pack("<Q", 0x7000000 | 3))  # next table outside RAM
    with pytest.raises(TranslationError, match="unreadable"):
        translate(mem, 0x1000, DEFAULT_TEXT)
    assert list(walk(mem, 0x1000)) == []


def test_kernel_root() -> None:
    assert kernel_root(0x12345000 | 0x801) == 0x12344000
    assert kernel_root(0x12345000 | 0x801, pti=False) == 0x12345000
    assert kernel_root((1 << 47) | 0x2000, mask=1 << 47) == 0x2000


# --- generated tables ------------------------------------------------------------------


@pytest.mark.parametrize("la57", [False, True])
@pytest.mark.parametrize("pti", [False, True])
@pytest.mark.parametrize("sme", [0, 1 << 47])
def test_translate_and_walk_generated(la57: bool, pti: bool, sme: int) -> None:
    mem, kt = build(kaslr_offset=0x1C000000, phys_base=0x10000000, la57=la57, pti=pti, sme_mask=sme,
                    split_4k=2)
    b = kt.builder
    root = kernel_root(kt.cr3, mask=sme)
    want = b.mappings(kt.pgd)
    assert list(walk(mem, root, la57=la57, mask=sme)) == want
    sizes = {m.size for m in want}
    assert sizes == {KB4, MB2, 1 << 30}
    for m in want[:: max(1, len(want) // 200)] + want[-3:]:
        for off in (0, m.size // 2, m.size - 1):
            assert translate(mem, root, m.va + off, la57, sme) == m.pa + off
    # kernel image: phys(v) = v - __START_KERNEL_map + phys_base throughout
    for off in (0, 0x123456, IMAGE - 1):
        va = kt.text_va + off
        assert translate(mem, root, va, la57, sme) == va - START_KERNEL_MAP + kt.phys_base
    assert translate(mem, root, kt.direct_va(0x5000123), la57, sme) == 0x5000123
    for va in (kt.text_va - 1, kt.text_va + IMAGE, kt.page_offset + RAM_TOP, 0x1000):
        with pytest.raises(TranslationError):
            translate(mem, root, va, la57, sme)
    if pti:
        proc = kt.add_process()
        kt.flush()
        assert list(walk(mem, proc.user_pgd or 0, la57=la57, mask=sme)) == b.mappings(proc.user_pgd or 0)
        assert list(walk(mem, proc.pgd, la57=la57, mask=sme)) == b.mappings(proc.pgd)
        assert proc.cr3_user & 0x1000 and kernel_root(proc.cr3_user, mask=sme) == proc.pgd


def test_read_virtual_crosses_pages() -> None:
    mem, kt = build(kaslr_offset=0x2000000, split_4k=1)
    va = kt.text_va + IMAGE - KB4 - 3  # inside the 4 KiB-mapped tail, across a page boundary
    mem.write(kt.kernel_phys(va), b"abcdefgh")
    kvm = KernelMemory(mem, page_tables(kt.pgd))
    assert kvm.read(va, 8) == b"abcdefgh"
    assert kvm.translate(va) == kt.kernel_phys(va)
    assert next(iter(kvm.walk(kt.text_va, kt.text_va + 1))) == Mapping(kt.text_va, kt.text_pa, 1)


# --- KASLR -------------------------------------------------------------------------------


def check(kt: KernelTables, res_cpus: int, mem: SparseMemory, cpus: list[CpuState]) -> None:
    res = kaslr_from_page_tables(mem, cpus, mask=kt.mask)
    assert (res.kerneloffset, res.phys_base) == (kt.kaslr_offset, kt.phys_base)
    assert res.agree and res.method == "page-tables" and not res.warnings
    assert res.text_va == kt.text_va and res.text_pa == kt.text_pa
    assert res.text_end == kt.text_va + IMAGE
    assert len([c for c in res.cpus if c.kerneloffset is not None]) == res_cpus
    assert res.symbol(DEFAULT_TEXT + 0x100) == kt.text_va + 0x100


@settings(max_examples=20, deadline=None)
@given(koff=st.integers(0, 488), load=st.integers(2, 1007), la57=st.booleans(), pti=st.booleans())
def test_kaslr_matches_truth(koff: int, load: int, la57: bool, pti: bool) -> None:
    kaslr = koff * MB2
    phys_base = load * MB2 - 0x1000000 - kaslr  # any 2 MiB-aligned load address above the pool
    mem, kt = build(kaslr_offset=kaslr, phys_base=phys_base, la57=la57, pti=pti)
    cpus = [kt.cpu_state(0)]
    kt.flush()
    check(kt, 1, mem, cpus)


@pytest.mark.parametrize(("kaslr", "phys_base"), [
    (0, 0),                        # nokaslr
    (0x2C000000, -346030080),      # Debian 6.1: negative phys_base (-0x14a00000); text PA 0x18600000
    (0x3D000000, 0x7000000),
])
def test_kaslr_cases(kaslr: int, phys_base: int) -> None:
    mem, kt = build(kaslr_offset=kaslr, phys_base=phys_base, idt_alias=kaslr != 0)
    if kt.text_pa < POOL.end:
        pytest.fail("test case overlaps the pool")
    cpus = [kt.cpu_state(0)]
    kt.flush()
    check(kt, 1, mem, cpus)


def test_kaslr_phys_zero_load() -> None:
    # the smallest offset that keeps the text PA >= 0 with phys_base -0x14a00000: PA 0
    mem = SparseMemory([Range(0, RAM_TOP)])
    kt = build_kernel_page_tables(mem, Range(0x4000000, 0x200000), kaslr_offset=0x13A00000,
                                  phys_base=-0x14A00000)
    assert kt.text_pa == 0
    cpus = [kt.cpu_state(0)]
    kt.flush()
    check(kt, 1, mem, cpus)


@pytest.mark.parametrize("la57", [False, True])
def test_kaslr_many_vcpus_different_cr3(la57: bool) -> None:
    sme = 1 << 46
    mem, kt = build(kaslr_offset=0x2C000000, phys_base=-346030080, la57=la57, pti=True, sme_mask=sme)
    p1, p2 = kt.add_process(), kt.add_process()
    cpus = [
        kt.cpu_state(0),                                 # swapper_pg_dir
        kt.cpu_state(1, cr3=p1.cr3_user, user=True),     # PTI user copy, odd page + PCID bits
        kt.cpu_state(2, cr3=p2.cr3_kernel),              # another process, kernel half shared
        CpuState(index=3, cr0=0x10, cr3=0),              # an offline/reset vCPU
    ]
    kt.flush()
    assert len({c.cr3 for c in cpus[:3]}) == 3
    check(kt, 3, mem, cpus)
    res = kaslr_from_page_tables(mem, cpus, mask=sme)
    assert res.cpus[1].root == p1.pgd and res.cpus[2].root == p2.pgd
    assert res.cpus[3].skipped == "CR3 is zero or unknown"
    # forcing "no PTI" walks the user copy, whose lowest kernel-text page is the entry text
    bad = kaslr_from_page_tables(mem, cpus[:2], mask=sme, pti=False)
    assert not bad.agree and any("disagree" in w for w in bad.warnings)
    assert bad.cpus[1].text_va == kt.text_va + 0xE00000


def test_idt_corroboration_and_system_map() -> None:
    kaslr, pbase = 0x1E000000, -0x200000
    mem, kt = build(kaslr_offset=kaslr, phys_base=pbase)
    cpus = [kt.cpu_state(0), kt.cpu_state(1)]
    banner = DEFAULT_TEXT + 0x1200040
    mem.write(kt.kernel_phys(banner + kaslr), b"Linux version 6.1.0-vmci (test)")
    kt.flush()
    res = kaslr_from_page_tables(mem, cpus)
    c0 = res.cpus[0]
    assert c0.idt_base == 0xFFFFFE0000000000 and c0.idt_pa == kt.idt_pa
    assert c0.idt_handler == kt.handler_va and c0.idt_handler_in_text
    assert c0.idt_handler_matches_phys_base
    smap_text = (f"ffffffff81000000 T _text\nffffffff81000000 T _stext\n"
                 f"{DEFAULT_TEXT + 0xA00A10:016x} T asm_exc_divide_error\n"
                 f"{kt.idt_table - kaslr:016x} D idt_table\n{banner:016x} D linux_banner\n")
    smap = parse_system_map(smap_text)
    res2 = kaslr_from_page_tables(mem, cpus, system_map=smap)
    assert res2.kerneloffset == kaslr and res2.text_link_source == "System.map _text"
    assert res2.banner_ok is True and res2.idt_handler_matches_symbol is True
    # a System.map of a build linked 2 MiB higher: consistent symbols still check out
    moved = {k: v + MB2 for k, v in smap.items()}
    res3 = kaslr_from_page_tables(mem, cpus, system_map=moved)
    assert res3.kerneloffset == kaslr - MB2 and res3.banner_ok and res3.idt_handler_matches_symbol
    # ... a System.map that does not belong to this kernel is caught by both checks
    wrong = {**smap, "_text": DEFAULT_TEXT + MB2}
    res4 = kaslr_from_page_tables(mem, cpus, system_map=wrong)
    assert res4.banner_ok is False and res4.idt_handler_matches_symbol is False

    # remove the kernel-text PMDs: only the IDT method (needs System.map) can still answer
    for off in range(0, IMAGE, MB2):
        va = kt.text_va + off
        pud = struct.unpack("<Q", mem.read(kt.pgd + 511 * 8, 8))[0] & 0xFFFFFFFFFF000
        pmd = struct.unpack("<Q", mem.read(pud + ((va >> 30) & 511) * 8, 8))[0] & 0xFFFFFFFFFF000
        mem.write(pmd + ((va >> 21) & 511) * 8, bytes(8))
    with pytest.raises(NotFoundError, match="no kernel text mapping"):
        kaslr_from_page_tables(mem, cpus)
    res5 = kaslr_from_page_tables(mem, cpus, system_map=smap)
    assert res5.method == "idt" and (res5.kerneloffset, res5.phys_base) == (kaslr, pbase)
    no_idt_sym = {k: v for k, v in smap.items() if k != "idt_table"}
    with pytest.raises(NotFoundError):  # the handler itself is unmapped now
        kaslr_from_page_tables(mem, cpus, system_map=no_idt_sym)


def test_kaslr_skips_and_not_found() -> None:
    mem, kt = build()
    cs = kt.cpu_state(0)
    off = CpuState(index=0, cr0=0x11, cr3=kt.cr3, cr4=0x20)  # PG clear
    legacy = CpuState(index=1, cr0=0x80000011, cr3=kt.cr3, cr4=0)  # 32-bit paging
    kt.flush()
    with pytest.raises(NotFoundError, match=r"CR0\.PG clear.*CR4\.PAE clear"):
        kaslr_from_page_tables(mem, [off, legacy])
    with pytest.raises(NotFoundError, match="no vCPUs"):
        kaslr_from_page_tables(mem, [])
    assert kaslr_from_page_tables(mem, [off, cs]).kerneloffset == 0
    res = kaslr_from_page_tables(mem, [cs])
    assert res.to_dict()["phys_base"] == 0


def test_parse_system_map() -> None:
    m = parse_system_map("ffffffff81000000 T _text\n\nffffffff82000000 D x\nffffffff83000000 D x\n")
    assert m == {"_text": 0xFFFFFFFF81000000, "x": 0xFFFFFFFF82000000}
    with pytest.raises(FormatError, match="line 2"):
        parse_system_map("ffffffff81000000 T _text\nzz T y\n")
    with pytest.raises(FormatError, match="line 1"):
        parse_system_map("ffffffff81000000 _text\n")
