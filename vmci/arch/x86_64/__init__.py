"""x86_64: 4/5-level paging with PTI and SME, QEMU's CPU notes, KASLR from the page tables.

:data:`ARCH` is the registry entry (:class:`vmci.arch.Arch`).  The modules: ``consts`` (the
facts, once), ``cpu`` (``NT_PRSTATUS``/``QEMUCPUState`` parse and build), ``paging`` (walks),
``kaslr`` (the kernel image from a vCPU's tables).  They are imported on first use, so looking
the architecture up stays cheap.
"""

from __future__ import annotations

import collections.abc as cabc
from collections.abc import Iterator, Sequence

from vmci.arch.base import Arch, KernelConstants, KernelKeys, Mapping, PageTableKaslr, PageTables
from vmci.arch.x86_64 import consts as C
from vmci.core.dump import CpuState, Note
from vmci.core.memory import PhysicalMemory
from vmci.layouts.elf import EM_X86_64


class X86_64Arch(Arch):
    """Linux on x86_64 (AMD64/Intel 64)."""

    name = "x86_64"
    machines = ("x86_64", "amd64")
    elf_machines = (EM_X86_64,)
    prstatus_size = 336
    pointer_size = 8
    byteorders = ("little",)
    page_size = C.PAGE_SIZE
    page_sizes = (C.PAGE_SIZE,)
    vmcoreinfo_keys = C.VMCOREINFO_KEYS
    vmcoreinfo_markers = C.VMCOREINFO_MARKERS
    phys_base_key = "phys_base"
    kaslr_keys = ("KERNELOFFSET", "NUMBER(phys_base)")
    tables_in_use = "CR3's"
    kernel = KernelConstants(image_start=C.START_KERNEL_MAP, image_end=C.KTEXT_END, text_link=C.DEFAULT_TEXT,
                             physical_start=C.PHYSICAL_START, physical_align=C.PHYSICAL_ALIGN)
    drgn_arch = "X86_64"
    translates = True
    finds_kaslr = True
    kernel_entries = C.KERNEL_HALF
    section_size_bits = C.SECTION_SIZE_BITS
    max_physmem_bits = (C.MAX_PHYSMEM_BITS_L4, C.MAX_PHYSMEM_BITS_L5)
    page_offset = C.PAGE_OFFSET_L4

    def cpus_from_notes(self, notes: Sequence[Note], *, byteorder: str = "little") -> list[CpuState]:
        """QEMU's ``CORE`` and ``QEMU`` notes (the byte order comes from ``QEMUCPUState.size``)."""
        from vmci.arch.x86_64.cpu import cpus_from_notes

        return cpus_from_notes(list(notes), self.name)

    def kernel_root(self, cpu: CpuState, *, mask: int = 0) -> PageTables | None:
        """The kernel PGD from CR3 (PCID, SME bit and the PTI user half removed) when CR0.PG is set."""
        if not cpu.paging or cpu.cr3 is None:
            return None
        from vmci.arch.x86_64.paging import kernel_root, page_tables

        return page_tables(kernel_root(cpu.cr3, mask=mask), la57=cpu.la57, mask=mask)

    def kernel_page_tables(self, keys: KernelKeys, *, phys_base: int | None = None) -> PageTables | None:
        """``SYMBOL(init_top_pgt)`` (or ``swapper_pg_dir``, ``init_level4_pgt``) - __START_KERNEL_map
        + ``NUMBER(phys_base)``, 5-level when ``NUMBER(pgtable_l5_enabled)``, entries masked with
        ``NUMBER(sme_mask)`` (makedumpfile ``arch/x86_64.c``, drgn ``arch_x86_64.c``)."""
        root = next((v for v in (keys.symbol(n) for n in C.ROOT_SYMBOLS) if v is not None), None)
        if phys_base is None:
            phys_base = keys.number("phys_base")
        if root is None or phys_base is None or not C.START_KERNEL_MAP <= root < C.KTEXT_END:
            return None
        pa = root - C.START_KERNEL_MAP + phys_base
        if pa < 0:
            return None
        from vmci.arch.x86_64.paging import page_tables

        la57 = bool(keys.number("pgtable_l5_enabled"))
        return page_tables(pa, la57=la57, mask=keys.number("sme_mask") or 0)

    def image_offset(self, keys: KernelKeys) -> int | None:
        """``__START_KERNEL_map - NUMBER(phys_base)``."""
        pb = keys.number("phys_base")
        return None if pb is None else (C.START_KERNEL_MAP - pb) & ((1 << 64) - 1)

    def lookup(self, memory: PhysicalMemory, tables: PageTables, va: int) -> Mapping:
        from vmci.arch.x86_64.paging import lookup

        return lookup(memory, tables.root, va, tables.va_bits == 57, tables.mask)

    def walk(self, memory: PhysicalMemory, tables: PageTables, start: int = 0,
             end: int = 1 << 64) -> Iterator[Mapping]:
        from vmci.arch.x86_64.paging import walk

        return walk(memory, tables.root, start, end, tables.va_bits == 57, tables.mask)

    def direct_map(self, memory: PhysicalMemory, tables: PageTables) -> int | None:
        """The lowest leaf mapped in the window ``CONFIG_RANDOMIZE_MEMORY`` places the direct map in
        (libkdumpfile's ``x86_64.c`` searches the same way): its VA minus its PA."""
        from vmci.arch.x86_64.paging import walk

        lo, hi = C.DIRECT_MAP_WINDOW_L5 if tables.va_bits == 57 else C.DIRECT_MAP_WINDOW_L4
        for leaf in walk(memory, tables.root, lo, hi, tables.va_bits == 57, tables.mask):
            return leaf.va - leaf.pa
        return None

    def cpu_notes(self, cpus: Sequence[CpuState], *, qemu: bool = True,
                  byteorder: str = "little") -> list[tuple[str, int, bytes]]:
        """QEMU's order (``dump/dump.c`` ``write_elf64_notes``): every ``CORE`` note, then every
        ``QEMU`` note (``QEMUCPUState``, 440 bytes)."""
        from vmci.arch.x86_64.cpu import NT_PRSTATUS, QEMU_NOTE_TYPE, as_x86_64, prstatus_desc, qemu_cpu_desc

        cpus = [as_x86_64(c) for c in cpus]
        notes = [("CORE", NT_PRSTATUS, prstatus_desc(c, self.name, order=byteorder)) for c in cpus]
        if qemu:
            notes += [("QEMU", QEMU_NOTE_TYPE, qemu_cpu_desc(c, self.name, order=byteorder)) for c in cpus]
        return notes

    def kernel_phys(self, va: int, phys_base: int) -> int | None:
        if not self.kernel.in_image(va):
            return None
        return va - C.START_KERNEL_MAP + phys_base

    def kernel_virt(self, pa: int, phys_base: int) -> int:
        return pa - phys_base + C.START_KERNEL_MAP

    def kaslr_from_page_tables(self, memory: PhysicalMemory, cpus: Sequence[CpuState], *, mask: int = 0,
                               system_map: cabc.Mapping[str, int] | None = None) -> PageTableKaslr:
        from vmci.arch.x86_64.kaslr import kaslr_from_page_tables

        return kaslr_from_page_tables(memory, cpus, mask=mask, system_map=system_map)

    def synthesized_keys(self, kaslr: PageTableKaslr) -> list[tuple[str, str, str]]:
        used = sum(c.kerneloffset is not None for c in kaslr.cpus)
        how = f"page tables of {used} vCPU(s), _text at {kaslr.text_va:#x}"
        return [("NUMBER(phys_base)", str(kaslr.phys_base), how),
                ("NUMBER(pgtable_l5_enabled)", str(int(kaslr.la57)), "CR4.LA57")]


ARCH = X86_64Arch()

__all__ = ["ARCH", "X86_64Arch"]
