"""KernelMemory on producer-generated guests: virtual reads of kernel-image, direct-map and
cpu_entry_area addresses checked against what the producer placed (its truth record and its page-table
builder), with the root from the VMCOREINFO, from a vCPU's CR3, or from a legacy text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmci.arch.x86_64.paging import page_tables
from vmci.core.dump import Dump
from vmci.core.memory import Range, SparseMemory
from vmci.discover.run import find_vmcoreinfo
from vmci.errors import NotFoundError, UnsupportedError, UsageError, VirtualReadError
from vmci.formats import open_dump
from vmci.kernel.symbols import KernelSymbols
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.kernel.vmem import KernelMemory
from vmci.producer.pagetables import KB4, MB2, build_kernel_page_tables
from vmci.producer.scenario import Guest, Scenario, build


def as_dump(g: Guest, *, cpus: bool = True, arch: str = "x86_64") -> Dump:
    """The generated guest's RAM as an opened dump would present it (no container in between)."""
    return Dump(path=Path("generated"), format="test", description="generated guest", memory=g.mem,
                arch=arch, cpus=list(g.cpus) if cpus else [])


def found_text(path: Path, fmt: str = "auto") -> tuple[Dump, VmcoreInfo]:
    d = open_dump(path, format=fmt)
    chosen = find_vmcoreinfo(d).chosen
    assert chosen is not None and chosen.text is not None
    return d, chosen.text


@pytest.mark.parametrize(("fmt", "la57", "pti"), [("elf", False, False), ("kdump-flat", True, True),
                                                   ("elf-paging", False, True), ("raw", True, False)])
def test_reads_match_the_producers_record(vmci_dump: Any, fmt: str, la57: bool, pti: bool) -> None:
    path, truth = vmci_dump(fmt, seed=31, la57=la57, pti=pti, ram="64M")
    k = truth["kernel"]
    d, text = found_text(path, "raw" if fmt == "raw" else "auto")
    with d:
        kmem = KernelMemory.from_dump(d, text)
        assert kmem.setup.how == "the VMCOREINFO's kernel page-table root" and not kmem.setup.warnings
        assert kmem.tables.root == k["pgd_paddr"] and kmem.tables.va_bits == (57 if la57 else 48)
        assert (kmem.kerneloffset, kmem.phys_base) == (k["kaslr_offset"], k["phys_base"])
        assert (kmem.pointer_size, kmem.byteorder, kmem.page_size) == (8, "little", 4096)
        # init_uts_ns: the address the producer wrote it at, the release it wrote
        uts = kmem.symbol("init_uts_ns")
        assert uts == k["init_uts_ns"]
        name = uts + kmem.offset("uts_namespace", "name")  # type: ignore[operator]
        assert kmem.read(name, 6) == b"Linux\0"
        assert kmem.read_cstring(name + 130, 65) == k["osrelease"].encode()
        assert kmem.translate(k["uts_release_vaddr"]) == k["uts_paddr"] + 130
        # the banner through the image mapping and through the direct map: same bytes, same page
        banner = k["linux_banner_text"].encode()
        assert kmem.read(k["linux_banner"], len(banner)) == banner
        direct = k["page_offset"] + k["linux_banner_paddr"]
        assert kmem.read(direct, len(banner)) == banner
        assert kmem.translate(direct) == kmem.translate(k["linux_banner"]) == k["linux_banner_paddr"]
        assert kmem.translate(k["swapper_pg_dir"]) == k["pgd_paddr"]
        # the per-CPU GDT pages live in the direct map
        for c in truth["cpus"]:
            assert kmem.translate(c["gdt_base"]) == c["gdt_base"] - k["page_offset"]


def test_the_vcpus_tables_serve_when_the_vmcoreinfo_is_lost(vmci_dump: Any) -> None:
    path, truth = vmci_dump("elf", seed=32, device="none", faults=["vmcoreinfo-lost"], pti=True, cpus=2)
    k = truth["kernel"]
    with open_dump(path) as d:
        assert not find_vmcoreinfo(d).found
        kmem = KernelMemory.from_dump(d)
    assert kmem.setup.how.startswith("the kernel page tables of vCPU ")
    assert kmem.tables.root == k["pgd_paddr"]
    assert (kmem.kerneloffset, kmem.phys_base) == (k["kaslr_offset"], k["phys_base"])
    assert kmem.setup.sources == dict.fromkeys(("kerneloffset", "phys_base"), "the vCPUs' page tables")
    with open_dump(path) as d:
        kmem = KernelMemory.from_dump(d)
        assert kmem.read(k["linux_banner"], 14) == b"Linux version "
        assert kmem.symbol("init_uts_ns") is None and kmem.offset("uts_namespace", "name") is None
        # a System.map supplies the symbol: link address + the page tables' KERNELOFFSET
        syms = KernelSymbols("System.map", {"linux_banner": k["linux_banner"] - k["kaslr_offset"]})
        kmem = KernelMemory.from_dump(d, symbols=syms)
        assert kmem.symbol("linux_banner") == k["linux_banner"]
        assert kmem.read_cstring(k["linux_banner"], 2000) == k["linux_banner_text"].encode().rstrip(b"\0")


def test_a_legacy_text_is_placed_with_the_page_tables_phys_base() -> None:
    """Kernel 4.9: ``SYMBOL(phys_base)`` (an address) and ``init_level4_pgt``; the root needs
    phys_base, which the vCPUs' tables give."""
    g = build(Scenario(seed=33, ram="64M", kernel="4.9", device="none"))
    assert g.tables is not None and g.kernel is not None and g.kernel.kaslr_offset != 0
    text = VmcoreInfo.parse(g.placed.text)
    assert "SYMBOL(phys_base)" in text and "NUMBER(phys_base)" not in text
    kmem = KernelMemory.from_dump(as_dump(g), text)
    assert kmem.tables.root == g.tables.pgd and kmem.setup.sources["phys_base"] == "the vCPUs' page tables"
    assert (kmem.phys_base, kmem.kerneloffset) == (g.kernel.phys_base, g.kernel.kaslr_offset)
    assert kmem.offset("uts_namespace", "name") is None  # not exported before 4.1x: the producer's layout
    name = kmem.symbol("init_uts_ns") + g.kernel.value("OFFSET(uts_namespace.name)")  # type: ignore[operator]
    assert kmem.read_cstring(name + 130, 65) == g.kernel.osrelease.encode()
    with pytest.raises(NotFoundError, match="no vCPU state"):
        KernelMemory.from_dump(as_dump(g, cpus=False), text)


def test_cpu_entry_area_alias_and_integers() -> None:
    """The IDT: in the image and at its cpu_entry_area alias (a lone 4 KiB PTE outside the image and
    the direct map); the gate fields the producer built read back as integers."""
    g = build(Scenario(seed=34, ram="64M", device="none", la57=True))
    t = g.tables
    assert t is not None
    kmem = KernelMemory.from_dump(as_dump(g), VmcoreInfo.parse(g.placed.text))
    assert t.idt_va != t.idt_table and kmem.translate(t.idt_va) == kmem.translate(t.idt_table) == t.idt_pa
    assert kmem.read(t.idt_va, 4096) == kmem.read(t.idt_table, 4096)
    assert kmem.read_u16(t.idt_va) == t.handler_va & 0xFFFF
    assert kmem.read_u16(t.idt_va + 2) == 0x10  # __KERNEL_CS
    assert kmem.read_u16(t.idt_va + 6) == (t.handler_va >> 16) & 0xFFFF
    assert kmem.read_u32(t.idt_va + 8) == t.handler_va >> 32
    assert kmem.read_u64(t.idt_va + 16) & 0xFFFF == (t.handler_va + 0x40) & 0xFFFF
    assert kmem.read_pointer(t.idt_va + 8) == t.handler_va >> 32  # the high half and the reserved word
    assert kmem.read_u8(t.idt_va + 5) == 0x8E  # present interrupt gate
    for i, c in enumerate(g.cpus):
        assert kmem.translate(c.gdt_base) == t.gdt_pages[i]  # type: ignore[arg-type]
        assert kmem.arch.kernel_root(c) == kmem.tables  # CR3 names the same tables as the VMCOREINFO
    leaves = list(kmem.walk(t.idt_va, t.idt_va + 1))
    assert [(m.pa, m.size) for m in leaves] == [(t.idt_pa, 1)]


def test_sme_masked_tables_from_the_tables_own_keys() -> None:
    """A guest with SME: the tables' VMCOREINFO keys (as the builder records them) root the walk and
    the encryption bit is stripped from every entry."""
    mem = SparseMemory([Range(0, 0x9FC00), Range(0x100000, 0x7FF00000)])
    kt = build_kernel_page_tables(mem, Range(0x100000, 0x300000), kaslr_offset=0x1E000000,
                                  phys_base=-0x200000, sme_mask=1 << 47, split_4k=1)
    va = kt.text_va + 0x2000000 - KB4 - 3  # across two 4 KiB pages at the end of the image
    mem.write(kt.kernel_phys(va), b"abcdefgh")
    text = VmcoreInfo.parse("".join(f"{key}={v}\n" for key, v in kt.vmcoreinfo_keys().items()))
    dump = Dump(path=Path("sme"), format="test", description="", memory=mem, arch="x86_64")
    kmem = KernelMemory.from_dump(dump, text)
    assert kmem.tables.mask == 1 << 47 and kmem.tables.root == kt.pgd
    assert kmem.read(va, 8) == b"abcdefgh" and kmem.translate(va) == kt.kernel_phys(va)
    assert kmem.translate(kt.page_offset + 0x12345678) == 0x12345678  # 1 GiB direct-map leaf


def test_errors_name_the_address() -> None:
    g = build(Scenario(seed=35, ram="32M", device="none"))
    t = g.tables
    assert t is not None
    kmem = KernelMemory.from_dump(as_dump(g), VmcoreInfo.parse(g.placed.text))
    end = t.text_va + t.image_size
    with pytest.raises(VirtualReadError, match="not mapped") as ei:
        kmem.read(end + 0x10, 4)
    assert ei.value.vaddr == end + 0x10 and ei.value.exit_code == 4
    with pytest.raises(VirtualReadError, match="not canonical"):
        kmem.read(0x0000900000000000, 8)
    with pytest.raises(VirtualReadError) as ei2:  # the last page is mapped, the next is not
        kmem.read(end - 8, 16)
    assert ei2.value.vaddr == end
    assert not kmem.is_mapped(end) and kmem.is_mapped(end - 1)
    with pytest.raises(UsageError, match="refusing"):
        kmem.read(t.text_va, KernelMemory.max_read + 1)
    with pytest.raises(UsageError):
        kmem.read(t.text_va, -1)
    with pytest.raises(UsageError, match="64-bit address space"):
        kmem.read((1 << 64) - 4, 8)
    # a string may end right before an unmapped page; a bound stops an endless one
    g.mem.write(t.kernel_phys(end - 5), b"tail\0")
    assert kmem.read_cstring(end - 5) == b"tail"
    g.mem.write(t.kernel_phys(end - 4096), b"x" * 4096)
    assert kmem.read_cstring(end - 4096, limit=100) == b"x" * 100
    with pytest.raises(VirtualReadError):
        kmem.read_cstring(end - 4096, limit=5000)


def test_nothing_to_translate_with() -> None:
    mem = SparseMemory([Range(0, 16 << 20)])
    raw = Dump(path=Path("raw"), format="raw", description="", memory=mem)
    with pytest.raises(UnsupportedError, match="unknown dumps are not supported"):
        KernelMemory.from_dump(raw)
    bare = Dump(path=Path("raw"), format="raw", description="", memory=mem, arch="x86_64")
    with pytest.raises(NotFoundError, match="no kernel page tables"):
        KernelMemory.from_dump(bare, VmcoreInfo.parse(b"OSRELEASE=6.1\n"))
    with pytest.raises(UnsupportedError, match="i386"):
        KernelMemory.from_dump(Dump(path=Path("x"), format="elf", description="", memory=mem, arch="i386"))
    # the VMCOREINFO's root outside the dump: a warning up front, an error naming the table on reading
    text = VmcoreInfo.parse(b"SYMBOL(init_top_pgt)=ffffffff9260a000\nNUMBER(phys_base)=0\n")
    kmem = KernelMemory.from_dump(bare, text)
    assert any("not in the dump" in w for w in kmem.setup.warnings)
    with pytest.raises(VirtualReadError, match="unreadable"):
        kmem.read(0xFFFFFFFF81000000, 1)
    assert page_tables(0x1000).page_size == 4096 and MB2 == 0x200000


def test_the_leaf_cache_is_bounded_and_transparent() -> None:
    """Reads through remembered leaves equal the producer's bytes, also after the cache overflows."""
    g = build(Scenario(seed=36, ram="32M", device="none"))
    t = g.tables
    assert t is not None
    tail = t.text_va + t.image_size - MB2  # the last 2 MiB: mapped with 4 KiB pages (split_4k=1)
    for i in range(16):
        g.mem.write(t.kernel_phys(tail + i * KB4), bytes([i]) * 8)
    kmem = KernelMemory.from_dump(as_dump(g), VmcoreInfo.parse(g.placed.text))
    kmem.max_cached_leaves = 3
    for _ in range(2):
        assert [kmem.read(tail + i * KB4, 8) for i in range(16)] == [bytes([i]) * 8 for i in range(16)]
        assert [kmem.leaf(tail + i * KB4 + 5).size for i in range(16)] == [KB4] * 16
    assert kmem.leaf(t.text_va).size == MB2 and kmem.translate(t.text_va + 7) == t.text_pa + 7
