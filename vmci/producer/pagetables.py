"""Builds x86_64 Linux kernel page tables into guest RAM, and vCPU states that use them.

What is built mirrors a running Linux x86_64 kernel:

* the kernel image at ``0xffffffff81000000 + kaslr_offset`` mapped with 2 MiB pages to
  ``0x1000000 + kaslr_offset + phys_base`` (so ``phys(v) = v - 0xffffffff80000000 + phys_base``),
  text executable, the rest NX, optionally the last 2 MiB pieces split into 4 KiB PTEs;
* the direct map of every RAM range at ``PAGE_OFFSET`` (0xffff888000000000 with 4 levels,
  0xff11000000000000 with 5) with 1 GiB / 2 MiB pages and 4 KiB pages at unaligned edges;
* ``swapper_pg_dir`` inside the image (8 KiB-aligned; with PTI its user copy is at +4096);
* ``idt_table`` inside the image, gate 0 pointing at a "divide error" handler in text, and
  its read-only alias at the cpu_entry_area address 0xfffffe0000000000 (a 4 KiB PTE) that
  IDTR holds on recent kernels;
* optional per-process PGDs sharing the kernel half, with a PTI user copy that maps only user
  pages, a little entry text and the cpu_entry_area.

Every entry (tables and leaves) and CR3 carry the optional SME encryption mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmci.arch.x86_64.cpu import CpuState
from vmci.arch.x86_64.paging import (
    ADDR_MASK,
    CR0_PE,
    CR0_PG,
    CR4_LA57,
    CR4_PAE,
    CR4_PGE,
    DEFAULT_TEXT,
    KTEXT_END,
    PHYSICAL_ALIGN,
    PTE_GLOBAL,
    PTE_NX,
    PTE_PRESENT,
    PTE_PS,
    PTE_RW,
    PTE_USER,
    START_KERNEL_MAP,
    Mapping,
    canonical,
    va_bits,
)
from vmci.core.memory import Range, SparseMemory
from vmci.errors import UsageError
from vmci.layouts.qemu_cpu import GDT_ENTRIES, IDT_GATE64, PAGE_TABLE

PAGE_OFFSET_4 = 0xFFFF888000000000
PAGE_OFFSET_5 = 0xFF11000000000000
CPU_ENTRY_AREA_RO_IDT = 0xFFFFFE0000000000
KB4, MB2, GB1 = 1 << 12, 1 << 21, 1 << 30
_ACCESSED_DIRTY = (1 << 5) | (1 << 6)
_TABLE_FLAGS = PTE_PRESENT | PTE_RW | _ACCESSED_DIRTY  # _KERNPG_TABLE
_KERNEL_CS, _KERNEL_DS, _USER_CS, _USER_DS = 0x10, 0x18, 0x33, 0x2B
# Linux's GDT: 1 KERNEL32_CS, 2 KERNEL_CS, 3 KERNEL_DS, 4 USER32_CS, 5 USER_DS, 6 USER_CS
_GDT = [0, 0x00CF9B000000FFFF, 0x00AF9B000000FFFF, 0x00CF93000000FFFF,
        0x00CFFB000000FFFF, 0x00CFF3000000FFFF, 0x00AFFB000000FFFF] + [0] * 9
_PCID_USER = 1 << 11  # PTI: user PCID = kernel PCID | bit 11


class PageTableBuilder:
    """Allocates 4 KiB tables from a physical pool and maps pages; :meth:`flush` writes them."""

    def __init__(self, memory: SparseMemory, pool: Range, *, la57: bool = False, mask: int = 0) -> None:
        self.memory, self.la57, self.mask = memory, la57, mask
        self.pool = pool
        self._next = -(-pool.start // KB4) * KB4
        self.tables: dict[int, list[int]] = {}
        self.leaves: dict[int, list[Mapping]] = {}
        self._shifts = (48, 39, 30, 21, 12) if la57 else (39, 30, 21, 12)

    def alloc(self, *, pair: bool = False, table: bool = True) -> int:
        """A zeroed page from the pool (``pair``: an 8 KiB-aligned pair, returns the first);
        ``table=False`` for a data page that is not tracked as a table."""
        align = 2 * KB4 if pair else KB4
        pa = -(-self._next // align) * align
        n = 2 if pair else 1
        if pa + n * KB4 > self.pool.end:
            raise UsageError(f"page-table pool {self.pool} exhausted")
        self._next = pa + n * KB4
        for i in range(n if table else 0):
            self.adopt(pa + i * KB4)
        return pa

    def adopt(self, pa: int) -> int:
        """Use the page at ``pa`` (outside the pool, e.g. ``swapper_pg_dir`` in the image) as a table."""
        if pa % KB4:
            raise UsageError(f"table at {pa:#x} is not page aligned")
        self.tables.setdefault(pa, [0] * 512)
        self.leaves.setdefault(pa, [])
        return pa

    def map_page(self, root: int, va: int, pa: int, size: int, *, nx: bool = False, rw: bool = True,
                 user: bool = False, global_: bool = True) -> None:
        """Map one page of ``size`` (4 KiB, 2 MiB or 1 GiB) at ``va`` to ``pa``."""
        if size not in (KB4, MB2, GB1) or va % size or pa % size:
            raise UsageError(f"cannot map {size:#x} bytes {va:#x} -> {pa:#x}: bad size or alignment")
        lin = va & ((1 << va_bits(self.la57)) - 1)
        table = root
        extra = PTE_USER if user else 0
        for shift in self._shifts:
            idx = (lin >> shift) & 511
            entries = self.tables[table]
            if 1 << shift == size:
                if entries[idx] & PTE_PRESENT:
                    raise UsageError(f"{va:#x} is already mapped")
                entries[idx] = (pa | PTE_PRESENT | _ACCESSED_DIRTY | extra | self.mask
                                | (PTE_RW if rw else 0) | (PTE_PS if size > KB4 else 0)
                                | (PTE_GLOBAL if global_ and not user else 0) | (PTE_NX if nx else 0))
                self.leaves[root].append(Mapping(va, pa, size))
                return
            e = entries[idx]
            if not e & PTE_PRESENT:
                e = entries[idx] = self.alloc() | _TABLE_FLAGS | extra | self.mask
            elif e & PTE_PS:
                raise UsageError(f"{va:#x} lies inside a large page")
            table = e & ADDR_MASK & ~self.mask

    def map_range(self, root: int, va: int, pa: int, size: int, *, max_page: int = MB2, **kw: bool) -> None:
        """Map ``size`` bytes with the largest pages (up to ``max_page``) alignment allows."""
        end = va + size
        while va < end:
            for page in (GB1, MB2, KB4):
                if page <= max_page and va % page == 0 and pa % page == 0 and va + page <= end:
                    break
            else:
                raise UsageError(f"cannot map {va:#x}: not 4 KiB aligned")
            self.map_page(root, va, pa, page, **kw)
            va, pa = va + page, pa + page

    def share(self, src: int, dst: int, index: int) -> None:
        """Copy top-level entry ``index`` of ``src`` into ``dst`` (same lower tables)."""
        self.tables[dst][index] = self.tables[src][index]
        lo = canonical(index << self._shifts[0], self.la57)
        hi = lo + (1 << self._shifts[0])
        self.leaves[dst] += [m for m in self.leaves[src] if lo <= m.va < hi]

    def mappings(self, root: int) -> list[Mapping]:
        """Every leaf reachable from ``root``, in VA order (what a full walk must yield)."""
        return sorted(self.leaves[root])

    def flush(self) -> None:
        for pa, entries in self.tables.items():
            self.memory.write(pa, PAGE_TABLE.build(entries))


@dataclass
class Process:
    """A user address space: the PGD pair and the CR3 values to run in it."""

    pgd: int
    user_pgd: int | None
    pcid: int
    cr3_kernel: int
    cr3_user: int
    user_page_va: int


@dataclass
class KernelTables:
    """What :func:`build_kernel_page_tables` built (the truth tests compare against)."""

    builder: PageTableBuilder
    la57: bool
    mask: int
    kaslr_offset: int
    phys_base: int
    page_offset: int
    text_va: int
    text_pa: int
    image_size: int
    text_size: int
    pgd: int
    user_pgd: int | None
    swapper_pg_dir: int
    idt_table: int
    idt_pa: int
    idt_va: int
    handler_va: int
    rip: int
    processes: list[Process] = field(default_factory=list)
    gdt_pages: dict[int, int] = field(default_factory=dict)

    @property
    def cr3(self) -> int:
        """CR3 of a vCPU running on the kernel's own tables."""
        return self.pgd | self.mask

    def kernel_phys(self, va: int) -> int:
        return va - START_KERNEL_MAP + self.phys_base

    def direct_va(self, pa: int) -> int:
        return self.page_offset + pa

    def vmcoreinfo_keys(self) -> dict[str, str]:
        """The x86_64 VMCOREINFO keys these tables imply, formatted as the kernel prints them."""
        return {
            "SYMBOL(swapper_pg_dir)": f"{self.swapper_pg_dir:x}",
            "SYMBOL(init_top_pgt)": f"{self.swapper_pg_dir:x}",
            "NUMBER(phys_base)": str(self.phys_base),
            "NUMBER(pgtable_l5_enabled)": str(int(self.la57)),
            "KERNELOFFSET": f"{self.kaslr_offset:x}",
            "NUMBER(sme_mask)": str(self.mask),
        }

    def add_process(self, *, pti: bool | None = None, pcid: int | None = None) -> Process:
        """A process PGD sharing the kernel half; with PTI an 8 KiB pair whose user copy maps
        only a user page, the first 12 KiB of entry text (at text + 0xe00000) and cpu_entry_area."""
        b = self.builder
        pti = self.user_pgd is not None if pti is None else pti
        pgd = b.alloc(pair=pti)
        for i in range(256, 512):
            if b.tables[self.pgd][i]:
                b.share(self.pgd, pgd, i)
        user_va = 0x400000
        user_pa = b.alloc()  # any page will do as the user page
        b.map_page(pgd, user_va, user_pa, KB4, user=True, nx=True)
        user_pgd = None
        if pti:
            user_pgd = pgd + KB4
            b.share(pgd, user_pgd, 0)
            entry = self.text_va + 0xE00000
            b.map_range(user_pgd, entry, self.kernel_phys(entry), 3 * KB4, max_page=KB4, rw=False)
            b.map_page(user_pgd, CPU_ENTRY_AREA_RO_IDT, self.idt_pa, KB4, nx=True, rw=False)
        pcid = len(self.processes) + 1 if pcid is None else pcid
        cr3k = pgd | self.mask | (pcid if pti else 0)
        cr3u = (user_pgd | self.mask | pcid | _PCID_USER) if user_pgd is not None else cr3k
        proc = Process(pgd, user_pgd, pcid, cr3k, cr3u, user_va)
        self.processes.append(proc)
        return proc

    def cpu_state(self, index: int, *, cr3: int | None = None, user: bool = False) -> CpuState:
        """A vCPU in kernel mode (or user mode) consistent with these tables.

        Call :meth:`flush` afterwards: the per-CPU GDT page is allocated here.
        """
        b = self.builder
        if index not in self.gdt_pages:
            self.gdt_pages[index] = b.alloc(table=False)
            b.memory.write(self.gdt_pages[index], GDT_ENTRIES.build(_GDT))
        percpu = self.direct_va(self.gdt_pages[index])
        cs, ss = (_USER_CS, _USER_DS) if user else (_KERNEL_CS, _KERNEL_DS)
        regs = {
            "rip": 0x401000 if user else self.rip, "rsp": percpu + 0xF00, "eflags": 0x246,
            "rax": 0, "rbx": index, "rcx": 0, "rdx": 0, "rsi": 0, "rdi": 0, "rbp": 0,
            "cs": cs, "ss": ss, "ds": 0, "es": 0, "fs": 0, "gs": 0,
            "cs_limit": 0xFFFFFFFF, "cs_flags": 0xA0FB00 if user else 0xA09B00,
            "ss_limit": 0xFFFFFFFF, "ss_flags": 0xC0F300 if user else 0xC09300,
            "fs_base": 0, "gs_base": 0 if user else percpu,
            "tr": 0x40, "tr_base": CPU_ENTRY_AREA_RO_IDT + 0x3000, "tr_limit": 0x4087, "tr_flags": 0x8B00,
        }
        cr4 = 0x3506F0 | CR4_PAE | CR4_PGE | (CR4_LA57 if self.la57 else 0)
        if self.user_pgd is not None:
            cr4 |= 1 << 17  # PCIDE: PTI kernels tag the two halves with PCIDs
        return CpuState(
            index=index, pid=index + 1, regs=regs,
            cr0=CR0_PG | CR0_PE | 0x50032, cr2=0, cr3=self.cr3 if cr3 is None else cr3, cr4=cr4,
            gdt_base=percpu, gdt_limit=0x7F, idt_base=self.idt_va, idt_limit=0xFFF,
            kernel_gs_base=percpu if user else 0, qemu_version=1,
        )

    def flush(self) -> None:
        self.builder.flush()


def build_kernel_page_tables(
    memory: SparseMemory,
    pool: Range,
    *,
    kaslr_offset: int = 0,
    phys_base: int = 0,
    la57: bool = False,
    image_size: int = 0x2000000,
    text_size: int = 0x1000000,
    page_offset: int | None = None,
    direct_map_page: int = GB1,
    pti: bool = False,
    sme_mask: int = 0,
    split_4k: int = 0,
    pgd_offset: int = 0x1C00000,
    idt_offset: int = 0x1C04000,
    handler_offset: int = 0xA00A10,
    rip_offset: int = 0x9F3B2E,
    idt_alias: bool = True,
) -> KernelTables:
    """Build the kernel's tables into ``memory`` (tables from ``pool``) and return the truth.

    ``split_4k`` maps the last that many 2 MiB pieces of the image with 4 KiB pages.  Offsets
    are relative to the image start (``_text``).  The caller must :meth:`KernelTables.flush`
    after adding processes or CPUs (done once here already).
    """
    if kaslr_offset % PHYSICAL_ALIGN or phys_base % PHYSICAL_ALIGN:
        raise UsageError("kaslr_offset and phys_base must be multiples of CONFIG_PHYSICAL_ALIGN (2 MiB)")
    text_va = DEFAULT_TEXT + kaslr_offset
    text_pa = text_va - START_KERNEL_MAP + phys_base
    if text_pa < 0 or text_va < DEFAULT_TEXT or text_va + image_size > KTEXT_END:
        raise UsageError(f"kernel image {text_va:#x} -> {text_pa:#x} is outside the kernel text window")
    if image_size % MB2 or not 0 < text_size <= image_size or split_4k * MB2 > image_size:
        raise UsageError("image_size must be 2 MiB-aligned and hold text_size and the split pieces")
    if not memory.contains(text_pa, image_size):
        raise UsageError(f"kernel image {text_pa:#x}+{image_size:#x} is not inside guest RAM")
    if pool.start < text_pa + image_size and text_pa < pool.end:
        raise UsageError(f"page-table pool {pool} overlaps the kernel image")
    if not memory.contains(pool.start, pool.size):
        raise UsageError(f"page-table pool {pool} is not inside guest RAM")
    if sme_mask & ~ADDR_MASK or (sme_mask and sme_mask & (sme_mask - 1)):
        raise UsageError("sme_mask must be one bit within bits 12..51")
    page_offset = (PAGE_OFFSET_5 if la57 else PAGE_OFFSET_4) if page_offset is None else page_offset
    b = PageTableBuilder(memory, pool, la57=la57, mask=sme_mask)
    pgd = b.adopt(text_pa + pgd_offset)
    user_pgd = b.adopt(pgd + KB4) if pti else None
    if pti and pgd % (2 * KB4):
        raise UsageError("with PTI swapper_pg_dir must be 8 KiB aligned")

    # kernel image: text executable, the rest NX; the last split_4k pieces with 4 KiB PTEs
    split_at = image_size - split_4k * MB2
    for off in range(0, image_size, MB2):
        nx = off >= text_size
        page = MB2 if off < split_at else KB4
        b.map_range(pgd, text_va + off, text_pa + off, MB2, max_page=page, nx=nx)
    # direct map of RAM
    for r in memory.ranges:
        lo, hi = -(-r.start // KB4) * KB4, r.end // KB4 * KB4
        if lo < hi:
            b.map_range(pgd, page_offset + lo, lo, hi - lo, max_page=direct_map_page, nx=True)
    # IDT: idt_table in the image, gate 0 -> divide error handler in text; RO alias in cpu_entry_area
    idt_table = text_va + idt_offset
    idt_pa = text_pa + idt_offset
    handler = text_va + handler_offset
    gates = bytearray()
    for vec in range(256):
        h = handler + 0x40 * vec
        present = vec < 32
        gates += IDT_GATE64.build({
            "offset_low": h & 0xFFFF, "segment": _KERNEL_CS, "attrs": (0x8E00 if present else 0),
            "offset_middle": (h >> 16) & 0xFFFF, "offset_high": h >> 32, "reserved": 0})
    memory.write(idt_pa, bytes(gates))
    idt_va = idt_table
    if idt_alias:
        idt_va = CPU_ENTRY_AREA_RO_IDT
        b.map_page(pgd, idt_va, idt_pa, KB4, nx=True, rw=False)
    kt = KernelTables(
        builder=b, la57=la57, mask=sme_mask, kaslr_offset=kaslr_offset, phys_base=phys_base,
        page_offset=page_offset, text_va=text_va, text_pa=text_pa, image_size=image_size,
        text_size=text_size, pgd=pgd, user_pgd=user_pgd, swapper_pg_dir=text_va + pgd_offset,
        idt_table=idt_table, idt_pa=idt_pa, idt_va=idt_va, handler_va=handler, rip=text_va + rip_offset,
    )
    if user_pgd is not None:
        # the kernel's own user copy: the cpu_entry_area IDT only (entry text is added per process)
        b.map_page(user_pgd, CPU_ENTRY_AREA_RO_IDT, idt_pa, KB4, nx=True, rw=False)
    kt.flush()
    return kt
