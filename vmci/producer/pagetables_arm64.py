"""Builds arm64 Linux kernel page tables (``swapper_pg_dir``) into guest RAM, and vCPU states.

What is built mirrors a running arm64 kernel (6.1; ``arch/arm64/mm/mmu.c`` ``map_kernel``,
``map_mem``; ``arch/arm64/kernel/vmlinux.lds.S``):

* ``idmap_pg_dir``, ``tramp_pg_dir``, ``reserved_pg_dir`` (all zero) and ``swapper_pg_dir``, one
  page each, at the end of the read-only part of the image (just below ``__init_begin``);
* the image mapped at ``VA = PA + kimage_voffset`` from ``_stext`` (the first 64 KiB, with the
  Image header, stay unmapped since 5.11) to ``__init_begin``, and ``[_data, _end)``; the init
  segment is unmapped after boot (``free_initmem``), so the image is two runs;
* the linear map of every RAM range at ``PAGE_OFFSET + (PA - PHYS_OFFSET)``, with blocks where
  alignment allows;
* a few module pages in the vmalloc area below the image (scattered physical pages), as
  ``module_alloc`` leaves them, so the image is not simply the lowest kernel mapping;
* with KPTI, ``tramp_pg_dir`` maps only the trampoline page (the vectors) at ``TRAMP_VALIAS``.

Descriptors follow the VMSAv8-64 format of :mod:`vmci.arch.aarch64.consts` (table descriptors
carry UXNTable as Linux's do; leaves AF and the inner-shareable attribute; FEAT_LPA/LPA2 address
bits when a physical address needs them), in the guest's byte order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vmci.arch.aarch64.consts import (
    DESC_TABLE,
    DESC_VALID,
    MIN_KIMG_ALIGN,
    SCTLR_E0E,
    SCTLR_EE,
    SEGMENT_ALIGN,
    kimage_vaddr,
    page_end,
    page_offset,
)
from vmci.arch.aarch64.paging import BLOCK_SHIFTS, shifts, top_entries
from vmci.arch.base import Mapping
from vmci.core.dump import CpuState
from vmci.core.memory import Range, SparseMemory
from vmci.errors import UsageError

_U64 = (1 << 64) - 1
_AF = 1 << 10
_SH_INNER = 0b11 << 8
_PXN, _UXN = 1 << 53, 1 << 54
_UXN_TABLE = 1 << 60
_ATTR_NORMAL = 0 << 2  # MAIR index 0 (Linux: MT_NORMAL)
PSTATE_EL1H = 0x3C5  # EL1 with SP_EL1, D/A/I/F masked (an idle vCPU in cpu_do_idle)
PSTATE_EL0T = 0x0
SCTLR_EL1_LINUX = 0x200000034F4D91D  # what a 6.1 guest under QEMU runs with (M, C, I set)
TCR_TG1 = {12: 0b10, 14: 0b01, 16: 0b11}
TCR_TG0 = {12: 0b00, 14: 0b10, 16: 0b01}
#: TCR_EL1 of a 6.1 guest under QEMU (cortex-a57, 4 KiB, 48-bit) without T0SZ/T1SZ/TG0/TG1
TCR_EL1_BASE = 0x0050_0074_B550_3510 & ~((0x3F << 16) | 0x3F | (0b11 << 30) | (0b11 << 14))
#: TRAMP_VALIAS: where KPTI's trampoline vectors are mapped (the fixmap, near the top)
TRAMP_VALIAS_FROM_TOP = 0x4000_0000 + 0x1_0000


class Arm64TableBuilder:
    """Allocates tables from a physical pool and maps pages; :meth:`flush` writes them."""

    def __init__(self, memory: SparseMemory, pool: Range, *, page_shift: int = 12, va_bits: int = 48,
                 byteorder: str = "little") -> None:
        self.memory, self.pool, self.byteorder = memory, pool, byteorder
        self.page_shift, self.va_bits = page_shift, va_bits
        self.granule = 1 << page_shift
        self.shifts = shifts(page_shift, va_bits)
        self._next = -(-pool.start // self.granule) * self.granule
        self.tables: dict[int, list[int]] = {}
        self.leaves: dict[int, list[Mapping]] = {}
        self.roots: set[int] = set()

    @property
    def lpa(self) -> bool:
        """FEAT_LPA (64 KiB) or FEAT_LPA2 (4/16 KiB) descriptors: 52-bit output addresses."""
        return self.va_bits == 52

    def alloc(self, *, table: bool = True) -> int:
        """A zeroed granule from the pool; ``table=False`` for a data page (not tracked)."""
        pa = self._next
        if pa + self.granule > self.pool.end:
            raise UsageError(f"page-table pool {self.pool} exhausted")
        self._next = pa + self.granule
        if table:
            self.adopt(pa)
        return pa

    def adopt(self, pa: int, *, root: bool = False) -> int:
        """Use the granule at ``pa`` (e.g. ``swapper_pg_dir`` in the image) as a table (``root``: a
        top-level one, of :func:`~vmci.arch.aarch64.paging.top_entries` entries)."""
        if pa % self.granule:
            raise UsageError(f"table at {pa:#x} is not {self.granule}-byte aligned")
        n = top_entries(self.page_shift, self.va_bits) if root else self.granule // 8
        self.tables.setdefault(pa, [0] * n)
        if root:
            self.roots.add(pa)
            self.leaves.setdefault(pa, [])
        return pa

    def _encode(self, pa: int) -> int:
        """The output-address bits of a descriptor for ``pa`` (FEAT_LPA/LPA2 high bits included)."""
        low = pa & 0x0000_FFFF_FFFF_F000
        if pa >> 48:
            if not self.lpa:
                raise UsageError(f"{pa:#x} needs 52-bit physical addresses (va_bits 52)")
            if self.page_shift == 16:
                low |= ((pa >> 48) & 0xF) << 12
            else:
                low |= pa & (0x3 << 48) | ((pa >> 50) & 0x3) << 8
        return low

    def map_page(self, root: int, va: int, pa: int, size: int, *, xn: bool = True) -> None:
        """Map one page or block of ``size`` bytes at kernel address ``va`` to ``pa``."""
        leaf_shifts = (self.page_shift, *BLOCK_SHIFTS[self.page_shift])
        if size.bit_length() - 1 not in leaf_shifts or size not in [1 << s for s in self.shifts] \
                or va % size or pa % size:
            raise UsageError(f"cannot map {size:#x} bytes {va:#x} -> {pa:#x}: bad size or alignment")
        if va < (1 << 64) - (1 << self.va_bits):
            raise UsageError(f"{va:#x} is not a kernel address of a {self.va_bits}-bit space")
        lin = va & ((1 << self.va_bits) - 1)
        table, width = root, self.va_bits
        for level, shift in enumerate(self.shifts):
            idx = (lin >> shift) & ((1 << (width - shift)) - 1)
            width = shift
            entries = self.tables[table]
            if 1 << shift == size:
                if entries[idx]:
                    raise UsageError(f"{va:#x} is already mapped")
                kind = DESC_TABLE if level == len(self.shifts) - 1 else DESC_VALID
                sh = 0 if self.lpa and self.page_shift != 16 else _SH_INNER
                entries[idx] = (self._encode(pa) | kind | _AF | sh | _ATTR_NORMAL
                                | (_PXN | _UXN if xn else _UXN))
                self.leaves[root].append(Mapping(va, pa, size))
                return
            e = entries[idx]
            if not e:
                nxt = self.alloc()
                e = entries[idx] = self._encode(nxt) | DESC_TABLE | _UXN_TABLE
            elif e & 0b11 != DESC_TABLE:
                raise UsageError(f"{va:#x} lies inside a block")
            table = self._decode(e)
        raise AssertionError("unreachable")

    def _decode(self, e: int) -> int:
        pa = e & 0x0000_FFFF_FFFF_F000 & ~(self.granule - 1)
        if self.page_shift == 16:
            pa |= ((e >> 12) & 0xF) << 48
        elif self.lpa:
            pa |= e & (0x3 << 48) | ((e >> 8) & 0x3) << 50
        return pa

    def map_range(self, root: int, va: int, pa: int, size: int, *, max_page: int | None = None,
                  xn: bool = True) -> None:
        """Map ``size`` bytes with the largest blocks alignment allows (up to ``max_page``)."""
        sizes = sorted((1 << s for s in (self.page_shift, *BLOCK_SHIFTS[self.page_shift])
                        if (1 << s) in [1 << x for x in self.shifts]), reverse=True)
        end = va + size
        while va < end:
            for page in sizes:
                if (max_page is None or page <= max_page) and va % page == 0 and pa % page == 0 \
                        and va + page <= end:
                    break
            else:
                raise UsageError(f"cannot map {va:#x}: not {self.granule}-byte aligned")
            self.map_page(root, va, pa, page, xn=xn)
            va, pa = va + page, pa + page

    def mappings(self, root: int) -> list[Mapping]:
        """Every leaf reachable from ``root``, in VA order (what a full walk must yield)."""
        return sorted(self.leaves[root])

    def flush(self) -> None:
        order = ">" if self.byteorder == "big" else "<"
        for pa, entries in self.tables.items():
            self.memory.write(pa, struct.pack(f"{order}{len(entries)}Q", *entries))


@dataclass(frozen=True)
class Arm64Image:
    """Where an arm64 image's parts lie, as offsets from ``_text`` (a 6.1 ``vmlinux.lds.S`` order)."""

    size: int  # _end - _text
    etext: int  # _etext = __start_rodata
    init_begin: int  # __init_begin: the page-table directories end just below
    init_end: int  # __init_end
    data: int  # _data
    symbols: dict[str, int] = field(default_factory=dict)  # name -> offset from _text


@dataclass
class Arm64KernelTables:
    """What :func:`build_arm64_kernel_tables` built (the truth tests compare against)."""

    builder: Arm64TableBuilder
    page_shift: int
    va_bits: int
    byteorder: str
    kaslr_offset: int
    phys_offset: int
    text_va: int
    text_pa: int
    image: Arm64Image
    swapper_pg_dir: int  # physical
    reserved_pg_dir: int
    tramp_pg_dir: int
    idmap_pg_dir: int
    module_va: int
    pc: int
    processes: int = 0

    @property
    def kimage_voffset(self) -> int:
        return (self.text_va - self.text_pa) & _U64

    @property
    def stext_va(self) -> int:
        return self.text_va + SEGMENT_ALIGN

    @property
    def page_offset(self) -> int:
        return page_offset(self.va_bits)

    @property
    def root(self) -> int:
        return self.swapper_pg_dir

    def kernel_phys(self, va: int) -> int:
        """``__pa_symbol``: ``va - kimage_voffset``."""
        return (va - self.kimage_voffset) & _U64

    def kernel_virt(self, pa: int) -> int:
        return (pa + self.kimage_voffset) & _U64

    def linear_va(self, pa: int) -> int:
        """``__va``: ``(pa - PHYS_OFFSET) | PAGE_OFFSET``."""
        return ((pa - self.phys_offset) & ((1 << self.va_bits) - 1)) | self.page_offset

    def vmcoreinfo_keys(self) -> dict[str, str]:
        """The arm64 VMCOREINFO keys these tables imply, formatted as the kernel prints them."""
        return {
            "SYMBOL(swapper_pg_dir)": f"{self.kernel_virt(self.swapper_pg_dir):x}",
            "NUMBER(VA_BITS)": str(self.va_bits),
            "NUMBER(kimage_voffset)": f"0x{self.kimage_voffset:x}",
            "NUMBER(PHYS_OFFSET)": f"0x{self.phys_offset & _U64:x}",
            "NUMBER(TCR_EL1_T1SZ)": f"0x{64 - self.va_bits:x}",
            "KERNELOFFSET": f"{self.kaslr_offset:x}",
        }

    def tcr_el1(self) -> int:
        t1sz = t0sz = 64 - self.va_bits
        return (TCR_EL1_BASE | t0sz | t1sz << 16 | TCR_TG0[self.page_shift] << 14
                | TCR_TG1[self.page_shift] << 30)

    def cpu_state(self, index: int, *, user: bool = False, asid: int | None = None) -> CpuState:
        """A vCPU idle in the kernel (EL1, PC in the text) or running a user program (EL0; with KPTI
        its ``TTBR1_EL1`` holds ``tramp_pg_dir``), with the system registers a migration stream
        saves (``ttbr0/1_el1``, ``tcr_el1``, ``sctlr_el1``, ``vbar_el1``, ``tpidr_el1``)."""
        regs = {f"x{i}": 0 for i in range(31)}
        stack = self.module_va + 0x100000 + index * 0x4000  # a vmalloc'd task stack
        asid = index + 1 if asid is None else asid
        vectors = self.stext_va + 0x800
        if user:
            regs.update(pc=0x404990 + 0x10 * index, sp=0xFFFFFE97ACC0 - 0x1000 * index, pstate=PSTATE_EL0T)
            regs["x30"] = 0x4005B0
            ttbr1 = self.tramp_pg_dir
        else:
            regs.update(pc=self.pc, sp=stack + 0x3DE0, pstate=PSTATE_EL1H)
            regs["x29"], regs["x30"] = stack + 0x3DE0, self.pc + 0x18
            ttbr1 = self.swapper_pg_dir
        sctlr = SCTLR_EL1_LINUX | (SCTLR_EE | SCTLR_E0E if self.byteorder == "big" else 0)
        regs.update(ttbr1_el1=(asid << 48) | ttbr1, ttbr0_el1=self.reserved_pg_dir, tcr_el1=self.tcr_el1(),
                    sctlr_el1=sctlr, vbar_el1=vectors, tpidr_el1=self.linear_va(self.text_pa) + index)
        cpu = CpuState(index=index, pid=index + 1, regs=regs, sources=["producer"])
        cpu.mmu = True
        return cpu

    def flush(self) -> None:
        self.builder.flush()


def build_arm64_kernel_tables(
    memory: SparseMemory,
    pool: Range,
    *,
    image: Arm64Image,
    text_pa: int,
    kaslr_offset: int = 0,
    phys_offset: int | None = None,
    page_shift: int = 12,
    va_bits: int = 48,
    byteorder: str = "little",
    kpti: bool = True,
    module_pages: int = 4,
    pc_offset: int = 0x9DA26C,
    map_header: bool = False,
) -> Arm64KernelTables:
    """Build the kernel's tables into ``memory`` (tables from ``pool``) and return the truth.

    ``text_pa`` is where ``_text`` is loaded, ``kaslr_offset`` ``KERNELOFFSET`` (``_text`` runs
    at ``KIMAGE_VADDR + kaslr_offset``), ``phys_offset`` ``PHYS_OFFSET`` (default: the lowest RAM
    address rounded down to 1 GiB).  Image offsets come from ``image``.  ``map_header`` maps
    ``[_text, _stext)`` too, as kernels before 5.11 did.
    """
    granule = 1 << page_shift
    if (text_pa + kaslr_offset) % MIN_KIMG_ALIGN and kaslr_offset % MIN_KIMG_ALIGN:
        raise UsageError("KERNELOFFSET must keep VA(_text) = PA(_text) modulo 2 MiB")
    if text_pa % SEGMENT_ALIGN or image.size % granule:
        raise UsageError("the image must be 64 KiB-aligned and a whole number of pages")
    if not memory.contains(text_pa, image.size):
        raise UsageError(f"kernel image {text_pa:#x}+{image.size:#x} is not inside guest RAM")
    if pool.start < text_pa + image.size and text_pa < pool.end:
        raise UsageError(f"page-table pool {pool} overlaps the kernel image")
    ram = list(memory.ranges)
    if phys_offset is None:
        phys_offset = ram[0].start & ~((1 << 30) - 1)
    text_va = kimage_vaddr(va_bits) + kaslr_offset
    b = Arm64TableBuilder(memory, pool, page_shift=page_shift, va_bits=va_bits, byteorder=byteorder)
    spd = text_pa + image.init_begin - granule
    reserved, tramp, idmap = spd - granule, spd - 2 * granule, spd - 3 * granule
    if spd % granule:
        raise UsageError("__init_begin must be page-aligned")
    b.adopt(spd, root=True)
    b.adopt(tramp, root=True)
    b.adopt(idmap, root=True)
    voff = text_va - text_pa
    # the image: [_stext, __init_begin) read-only part (text executable), then [_data, _end)
    stext = text_va + SEGMENT_ALIGN
    first = text_va if map_header else stext
    b.map_range(spd, first, first - voff, image.etext - (first - text_va), xn=False)
    b.map_range(spd, text_va + image.etext, text_pa + image.etext, image.init_begin - image.etext)
    b.map_range(spd, text_va + image.data, text_pa + image.data, image.size - image.data)
    # the linear map
    base = page_offset(va_bits)
    for r in ram:
        lo, hi = -(-r.start // granule) * granule, r.end // granule * granule
        va = ((lo - phys_offset) & ((1 << va_bits) - 1)) | base
        if lo < hi:
            if va + (hi - lo) > page_end(va_bits):
                raise UsageError(f"RAM {r} does not fit the linear map with PHYS_OFFSET {phys_offset:#x}")
            b.map_range(spd, va, lo, hi - lo)
    # module pages below the image (scattered physical pages, as module_alloc leaves them)
    module_va = (text_va - (64 << 20)) & ~(granule - 1)
    for i in range(module_pages):
        b.map_page(spd, module_va + i * granule, b.alloc(table=False), granule)
    # an identity map of the image (kernel-half indices of a TTBR0 table are user addresses: use
    # a TTBR1-shaped entry so the page looks populated) and KPTI's trampoline
    top = (1 << 64) - granule
    b.map_page(idmap, top - 16 * granule, text_pa + SEGMENT_ALIGN, granule)
    if kpti:
        tramp_va = (1 << 64) - TRAMP_VALIAS_FROM_TOP
        tramp_va -= tramp_va % granule
        b.map_page(tramp, tramp_va, text_pa + SEGMENT_ALIGN, granule, xn=False)
    kt = Arm64KernelTables(
        builder=b, page_shift=page_shift, va_bits=va_bits, byteorder=byteorder, kaslr_offset=kaslr_offset,
        phys_offset=phys_offset & _U64, text_va=text_va, text_pa=text_pa, image=image, swapper_pg_dir=spd,
        reserved_pg_dir=reserved, tramp_pg_dir=tramp, idmap_pg_dir=idmap, module_va=module_va,
        pc=stext + min(pc_offset, image.etext - SEGMENT_ALIGN - 4) // 4 * 4,
    )
    kt.flush()
    return kt


__all__ = ["Arm64Image", "Arm64KernelTables", "Arm64TableBuilder", "build_arm64_kernel_tables"]
