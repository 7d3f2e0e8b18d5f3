"""aarch64 (arm64): QEMU's CPU notes, VMSAv8-64 translation (4/16/64 KiB granules, 39- to 52-bit
VAs), the kernel's tables from the VMCOREINFO or found in memory, KASLR.

:data:`ARCH` is the registry entry (:class:`vmci.arch.Arch`).  The modules: ``consts`` (the
facts, once), ``cpu`` (``NT_PRSTATUS`` parse and build), ``paging`` (walks), ``kaslr`` (the
kernel's tables and image without a VMCOREINFO).  Both byte orders are read: a big-endian guest's
dump is big-endian throughout (QEMU target/arm/arch_dump.c, ``SCTLR_EL1.EE``).

What arm64 calls ``phys_base`` is ``NUMBER(PHYS_OFFSET)`` (``memstart_addr``, the physical address
of ``PAGE_OFFSET``): QEMU's kdump header and makedumpfile name it so.  It places the linear map,
not the image; the image is placed by ``NUMBER(kimage_voffset)`` (``PA = VA - kimage_voffset``),
which :meth:`Aarch64Arch.image_offset` gives.  ``PHYS_OFFSET`` may look negative (linear-map
randomisation, a 52-bit kernel on 48-bit hardware): it is kept as the kernel prints it, unsigned.
"""

from __future__ import annotations

import collections.abc as cabc
from collections.abc import Iterator, Sequence

from vmci.arch.aarch64 import consts as C
from vmci.arch.base import Arch, KernelConstants, KernelKeys, Mapping, PageTableKaslr, PageTables
from vmci.core.dump import CpuState, Note
from vmci.core.memory import PhysicalMemory
from vmci.layouts.elf import EM_AARCH64


class Aarch64Arch(Arch):
    """Linux on 64-bit Arm."""

    name = "aarch64"
    machines = ("aarch64", "arm64", "aarch64_be")
    elf_machines = (EM_AARCH64,)
    prstatus_size = 392
    pointer_size = 8
    byteorders = ("little", "big")
    page_size = 4096
    page_sizes = C.PAGE_SIZES
    vmcoreinfo_keys = C.VMCOREINFO_KEYS
    vmcoreinfo_markers = C.VMCOREINFO_MARKERS
    phys_base_key = C.PHYS_BASE_KEY
    kaslr_keys = C.KASLR_KEYS
    # QEMU's dumps save no TTBR1_EL1: the tables are the swapper_pg_dir found in memory (or TTBR1
    # from a migration stream)
    tables_in_use = "the live tables'"
    kernel = KernelConstants(image_start=C.KIMAGE_VADDR,
                             image_end=C.kaslr_window(C.DEFAULT_VA_BITS)[1] + (1 << 30),
                             text_link=C.KIMAGE_VADDR, physical_start=C.VIRT_IMAGE_LOAD,
                             physical_align=C.MIN_KIMG_ALIGN)
    drgn_arch = "AARCH64"
    translates = True
    finds_kaslr = True
    kernel_entries = slice(0, None)  # TTBR1 is the kernel's alone: every CPU uses swapper_pg_dir whole

    def cpus_from_notes(self, notes: Sequence[Note], *, byteorder: str = "little") -> list[CpuState]:
        """``CORE``/``NT_PRSTATUS`` notes (x0..x30, sp, pc, pstate) in the dump's byte order."""
        from vmci.arch.aarch64.cpu import cpus_from_notes

        return cpus_from_notes(notes, self.name, byteorder=byteorder)

    def kernel_root(self, cpu: CpuState, *, mask: int = 0) -> PageTables | None:
        """The tables ``TTBR1_EL1``/``TCR_EL1`` give (a migration stream saves them; dumps do not)."""
        ttbr1, tcr = cpu.regs.get("ttbr1_el1"), cpu.regs.get("tcr_el1")
        if ttbr1 is None or tcr is None or cpu.mmu is False:
            return None
        from vmci.arch.aarch64.paging import from_registers

        return from_registers(ttbr1, tcr, cpu.regs.get("sctlr_el1"))

    def kernel_page_tables(self, keys: KernelKeys, *, phys_base: int | None = None) -> PageTables | None:
        """``SYMBOL(swapper_pg_dir) - NUMBER(kimage_voffset)``, a ``PAGESIZE`` granule, and
        ``64 - NUMBER(TCR_EL1_T1SZ)`` bits (``NUMBER(VA_BITS)`` with 64 KiB pages, whose
        ``swapper_pg_dir`` keeps the 52-bit layout; drgn ``arch_aarch64.c``, libkdumpfile
        ``aarch64.c``).  ``phys_base`` (PHYS_OFFSET) plays no part: the image has its own offset."""
        spd, voff = keys.symbol("swapper_pg_dir"), keys.number("kimage_voffset")
        size = keys.pagesize
        if spd is None or voff is None or size not in C.PAGE_SIZES:
            return None
        shift = size.bit_length() - 1
        va_bits = keys.number("VA_BITS")
        t1sz = keys.number("TCR_EL1_T1SZ")
        if shift != 16 and t1sz is not None:
            va_bits = 64 - t1sz
        if va_bits is None or va_bits not in C.VA_BITS_CHOICES[shift]:
            return None
        root = (spd - voff) & ((1 << 64) - 1)
        if root >= 1 << 52 or root % 8:
            return None
        from vmci.arch.aarch64.paging import page_tables

        return page_tables(root, page_shift=shift, va_bits=va_bits)

    def image_offset(self, keys: KernelKeys) -> int | None:
        """``NUMBER(kimage_voffset)``."""
        v = keys.number("kimage_voffset")
        return None if v is None else v & ((1 << 64) - 1)

    def lookup(self, memory: PhysicalMemory, tables: PageTables, va: int) -> Mapping:
        from vmci.arch.aarch64.paging import lookup

        return lookup(memory, tables, va)

    def walk(self, memory: PhysicalMemory, tables: PageTables, start: int = 0,
             end: int = 1 << 64) -> Iterator[Mapping]:
        from vmci.arch.aarch64.paging import walk

        return walk(memory, tables, start, end)

    def kaslr_from_page_tables(self, memory: PhysicalMemory, cpus: Sequence[CpuState], *, mask: int = 0,
                               system_map: cabc.Mapping[str, int] | None = None) -> PageTableKaslr:
        from vmci.arch.aarch64.kaslr import kaslr_from_page_tables

        return kaslr_from_page_tables(memory, cpus, system_map=system_map)

    def synthesized_keys(self, kaslr: PageTableKaslr) -> list[tuple[str, str, str]]:
        t = kaslr.tables
        how = f"{'TTBR1_EL1' if kaslr.method == 'page-tables' else 'swapper_pg_dir'} at {t.root:#x}"
        voff = (kaslr.text_va - kaslr.text_pa) & ((1 << 64) - 1)
        return [("NUMBER(VA_BITS)", str(t.va_bits), f"{how}: a {t.va_bits}-bit walk maps the image"),
                ("NUMBER(kimage_voffset)", f"0x{voff:x}", f"the image mapped at {kaslr.text_va:#x} -> "
                                                         f"{kaslr.text_pa:#x}"),
                ("NUMBER(PHYS_OFFSET)", f"0x{kaslr.phys_base:x}", "the first linear-map mapping"),
                ("NUMBER(TCR_EL1_T1SZ)", f"0x{64 - t.va_bits:x}", f"{t.va_bits}-bit kernel addresses")]


ARCH = Aarch64Arch()

__all__ = ["ARCH", "Aarch64Arch"]
