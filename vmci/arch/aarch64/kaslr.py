"""KASLR of an arm64 guest from memory: the kernel's tables, the image they map, checked against
the vCPUs' program counters.

QEMU's arm64 dumps save no system register (no ``TTBR1_EL1``, no ``TCR_EL1``), so the tables are
found in RAM.  Kernel facts used (6.1; ``arch/arm64/kernel/vmlinux.lds.S``): ``swapper_pg_dir`` is
one page of the image and the page before it is ``reserved_pg_dir``, which stays all zero (it is
``TTBR0`` while no user table is live); ``swapper_pg_dir`` holds only table descriptors (blocks at
the top level for 2-level layouts) for the linear map in its lower half and for the vmalloc area,
the image, fixmap and vmemmap in its upper half.  A candidate is walked with each VA size its
granule allows and kept when it maps the EL1 vCPUs' PCs into RAM with a 2 MiB-aligned ``VA - PA``
(``kimage_voffset`` is one, see :mod:`vmci.arch.aarch64.consts`).  A migration stream saves
``TTBR1_EL1`` and ``TCR_EL1``: its vCPUs give the root directly (a vCPU caught at EL0 under KPTI
holds ``tramp_pg_dir``, which maps no image; it is skipped).

From the chosen tables: the image is the run of mappings with one 2 MiB-aligned ``VA - PA`` that
holds a PC (else the first such run of at least 2 MiB in the KASLR window) and its first address
is ``_stext`` (``_text`` before 5.11, when the Image header was still mapped: checked through the
header's ``ARM\\x64`` magic); ``KERNELOFFSET = VA(_text) - KIMAGE_VADDR``; ``kimage_voffset = VA - PA``
of the run; ``PHYS_OFFSET = PA - (VA - PAGE_OFFSET)`` of the first linear-map mapping (what arm64
calls ``phys_base``).  No surveyed tool does this for arm64 (crash needs a vmlinux, libkdumpfile and
drgn a VMCOREINFO).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from collections.abc import Mapping as StrMap
from dataclasses import dataclass

from vmci.arch.aarch64.consts import (
    DESC_TABLE,
    DESC_TYPE_MASK,
    DESC_VALID,
    IMAGE_MAGIC,
    IMAGE_MAGIC_OFFSET,
    MIN_KIMG_ALIGN,
    OA_MASK_48,
    PAGE_SHIFTS,
    SEGMENT_ALIGN,
    VA_BITS_CHOICES,
    kaslr_window,
    kimage_vaddr,
    page_end,
    page_offset,
)
from vmci.arch.aarch64.cpu import exception_level
from vmci.arch.aarch64.paging import (
    BLOCK_SHIFTS,
    from_registers,
    lookup,
    page_tables,
    shifts,
    top_entries,
    walk,
)
from vmci.arch.base import CpuKaslr, PageTableKaslr, PageTables
from vmci.core.dump import CpuState
from vmci.core.memory import PhysicalMemory
from vmci.errors import NotFoundError, VmciError

_U64 = (1 << 64) - 1
#: candidates walked per granule at most (a real scan finds one or two)
MAX_CANDIDATES = 64
#: the smallest image run accepted without a PC inside it
MIN_IMAGE_RUN = 2 << 20
#: leaf mappings looked at in all, over every candidate: a real image window holds some ten
#: thousand; tables that point at themselves could describe billions
MAX_LEAVES = 1 << 20


class Budget:
    """How many more leaf mappings the search may look at (shared by every candidate)."""

    def __init__(self, leaves: int = MAX_LEAVES) -> None:
        self.left = leaves

    def take(self) -> bool:
        self.left -= 1
        return self.left >= 0


@dataclass(frozen=True)
class ImageRun:
    """A run of kernel mappings with one ``VA - PA``: ``[va, end)`` at physical ``pa``."""

    va: int
    pa: int
    end: int

    @property
    def voffset(self) -> int:
        return (self.va - self.pa) & _U64

    def holds(self, va: int) -> bool:
        return self.va <= va < self.end


@dataclass
class TablesVerdict:
    """What one set of tables says: the image run, PHYS_OFFSET and which PCs it maps into the run."""

    tables: PageTables
    run: ImageRun | None
    phys_offset: int | None
    pc_hits: int
    root_in_image: bool

    @property
    def score(self) -> tuple[int, bool, int]:
        return (self.pc_hits, self.root_in_image, 0 if self.run is None else self.run.end - self.run.va)


def kernel_pcs(cpus: Sequence[CpuState]) -> list[tuple[int, int]]:
    """``(cpu index, pc)`` of the vCPUs at EL1 with a kernel (upper-half) PC."""
    out = []
    for c in cpus:
        pc, pstate = c.regs.get("pc"), c.regs.get("pstate")
        if pc is not None and pstate is not None and exception_level(pstate) == 1 and pc >> 63:
            out.append((c.index, pc))
    return out


def _runs(memory: PhysicalMemory, tables: PageTables, start: int, end: int,
          budget: Budget) -> Iterator[ImageRun]:
    """Runs of mappings in ``[start, end)`` contiguous in VA with one ``VA - PA`` (until the budget
    is spent)."""
    cur: list[int] | None = None  # [va, pa, end]
    for m in walk(memory, tables, start, end):
        if not budget.take():
            break
        if cur is not None and m.va == cur[2] and m.va - m.pa == cur[0] - cur[1]:
            cur[2] = m.va + m.size
            continue
        if cur is not None:
            yield ImageRun(*cur)
        cur = [m.va, m.pa, m.va + m.size]
    if cur is not None:
        yield ImageRun(*cur)


def image_window(va_bits: int) -> tuple[int, int]:
    """Where the image can be mapped: from ``KIMAGE_VADDR`` to the top of the KASLR range plus 1 GiB."""
    return kimage_vaddr(va_bits), kaslr_window(va_bits)[1] + (1 << 30)


def judge(memory: PhysicalMemory, tables: PageTables, pcs: Sequence[tuple[int, int]],
          budget: Budget | None = None) -> TablesVerdict:
    """Find the image run and PHYS_OFFSET through ``tables`` and count the PCs they map into it."""
    budget = budget or Budget()
    hits: list[tuple[int, int]] = []
    for _, pc in pcs:
        try:
            leaf = lookup(memory, tables, pc)
        except VmciError:
            continue
        pa = leaf.pa + (pc - leaf.va)
        if memory.readable(pa, 4) and (pc - pa) % MIN_KIMG_ALIGN == 0:
            hits.append((pc, pa))
    lo, hi = image_window(tables.va_bits)
    run = None
    if hits:
        pc, pa = hits[0]
        for r in _runs(memory, tables, lo, hi, budget):
            if r.holds(pc) and r.pa + (pc - r.va) == pa:
                run = r
                break
    else:
        run = next((r for r in _runs(memory, tables, lo, hi, budget)
                    if r.end - r.va >= MIN_IMAGE_RUN and r.voffset % MIN_KIMG_ALIGN == 0
                    and memory.readable(r.pa, 4)), None)
    n_hits = sum(1 for pc, _ in hits if run is not None and run.holds(pc))
    linear = next(walk(memory, tables, page_offset(tables.va_bits), page_end(tables.va_bits)), None)
    phys_offset = None if linear is None else (linear.pa - (linear.va - page_offset(tables.va_bits))) & _U64
    in_image = run is not None and run.pa <= tables.root < run.pa + (run.end - run.va)
    return TablesVerdict(tables, run, phys_offset, n_hits, in_image)


def _candidate_entries(page: bytes, order: str) -> list[tuple[int, int]] | None:
    """``(index, descriptor)`` of the non-zero entries of a would-be ``swapper_pg_dir``, or None when
    one of them is not a valid descriptor."""
    values = struct.unpack(f"{order}{len(page) // 8}Q", page)
    out = [(i, d) for i, d in enumerate(values) if d]
    if len(out) > len(values) // 2 + 1 or any(not d & DESC_VALID for _, d in out):
        return None
    return out


def swapper_candidates(memory: PhysicalMemory, *, byteorder: str = "little") -> Iterator[PageTables]:
    """Pages that look like ``swapper_pg_dir``, as :class:`~vmci.arch.PageTables` for each VA size
    their granule allows: the page before is zero (``reserved_pg_dir``) or not in the dump, entries
    are valid descriptors pointing into the dump, at most half the table is used, and both parts
    (the linear map below ``PAGE_END``; vmalloc, the image, fixmap and vmemmap above) have an entry.

    One pass over memory serves the three granules (a kdump file decompresses once); 4 KiB
    candidates come first, then 16 and 64 KiB."""
    order = ">" if byteorder == "big" else "<"
    found: dict[int, list[PageTables]] = {shift: [] for shift in PAGE_SHIFTS}
    prev: dict[int, tuple[int, bool]] = {shift: (-1, False) for shift in PAGE_SHIFTS}  # (address, zero)
    zeros = {shift: bytes(1 << shift) for shift in PAGE_SHIFTS}
    chunk = 1 << 20  # a multiple of every granule
    top = 1 << max(PAGE_SHIFTS)
    nxt = dict.fromkeys(PAGE_SHIFTS, 0)  # per granule: the next page address not yet looked at
    carry_at, carry, prev_end = 0, b"", -1
    for addr, buf in memory.chunks(max_size=chunk):
        # chunks follow the container's runs, so a page may straddle two of them: the bytes since
        # the last 64 KiB boundary are carried into the next chunk when it continues this one
        if addr == prev_end and carry:
            base, data = carry_at, carry + bytes(buf)
        else:
            base, data = addr, bytes(buf)  # bytes compare with memcmp; memoryview slices slowly
        prev_end = addr + len(buf)
        keep = prev_end // top * top
        carry_at, carry = (keep, data[keep - base:]) if keep >= base else (base, data)
        for shift in PAGE_SHIFTS:
            size, zero, out = 1 << shift, zeros[shift], found[shift]
            if len(out) >= MAX_CANDIDATES:
                continue
            first = max(base + (-base % size), nxt[shift])
            for p in range(first, base + len(data) - size + 1, size):
                off = p - base
                nxt[shift] = p + size
                page = data[off:off + size]
                is_zero = page == zero
                last, last_zero = prev[shift]
                prev[shift] = (p, is_zero)
                if is_zero:
                    continue
                if last == p - size:
                    if not last_zero:
                        continue
                elif memory.readable(p - size, size) and memory.read(p - size, size) != zero:
                    continue
                entries = _candidate_entries(page, order)
                if not entries:
                    continue
                for va_bits in VA_BITS_CHOICES[shift]:
                    if _plausible(memory, entries, shift, va_bits):
                        out.append(page_tables(p, page_shift=shift, va_bits=va_bits, byteorder=byteorder))
    for shift in PAGE_SHIFTS:
        yield from found[shift][:MAX_CANDIDATES]


def _plausible(memory: PhysicalMemory, entries: list[tuple[int, int]], page_shift: int, va_bits: int) -> bool:
    n = top_entries(page_shift, va_bits)
    top_shift = shifts(page_shift, va_bits)[0]
    split = (page_end(va_bits) & ((1 << va_bits) - 1)) >> top_shift  # linear map below, the rest above
    if entries[-1][0] >= n or len(entries) > n // 2 + 1:
        return False
    if not any(i < split for i, _ in entries) or not any(i >= split for i, _ in entries):
        return False
    for _, d in entries:
        kind = d & DESC_TYPE_MASK
        if kind != DESC_TABLE and not (kind == DESC_VALID and top_shift in BLOCK_SHIFTS[page_shift]):
            return False
        if not memory.contains(d & OA_MASK_48 & ~((1 << page_shift) - 1), 8):
            return False
    return True


def _text_start(memory: PhysicalMemory, run: ImageRun) -> tuple[int, str]:
    """``VA(_text)`` of an image whose first mapping is ``run.va``, and how it was decided."""
    def magic_at(pa: int) -> bool:
        return pa >= 0 and memory.readable(pa + IMAGE_MAGIC_OFFSET, 4) and \
            memory.read(pa + IMAGE_MAGIC_OFFSET, 4) == IMAGE_MAGIC

    if magic_at(run.pa):
        return run.va, "the Image header is mapped: the first mapping is _text (kernel < 5.11)"
    if magic_at(run.pa - SEGMENT_ALIGN):
        return run.va - SEGMENT_ALIGN, "the Image header lies 64 KiB below the first mapping (_stext)"
    if run.va % MIN_KIMG_ALIGN == 0:
        return run.va, "the first mapping is 2 MiB-aligned: taken as _text (kernel < 5.11)"
    return run.va - SEGMENT_ALIGN, "the first mapping taken as _stext = _text + 64 KiB (kernel >= 5.11)"


def kaslr_from_page_tables(memory: PhysicalMemory, cpus: Sequence[CpuState], *,
                           system_map: StrMap[str, int] | None = None) -> PageTableKaslr:
    """``KERNELOFFSET`` and ``PHYS_OFFSET`` (arm64's ``phys_base``) from the kernel's tables: the
    vCPUs' ``TTBR1_EL1`` when the container saved it, else ``swapper_pg_dir`` found in memory.
    Raises :class:`~vmci.errors.NotFoundError` when no tables map a kernel image."""
    pcs = kernel_pcs(cpus)
    budget = Budget()
    per_cpu = {c.index: CpuKaslr(cpu=c.index, cr3=c.regs.get("ttbr1_el1")) for c in cpus}
    verdicts: dict[int, TablesVerdict] = {}  # by vCPU, TTBR1 mode
    method = "page-tables"
    for c in cpus:
        out = per_cpu[c.index]
        ttbr1, tcr = c.regs.get("ttbr1_el1"), c.regs.get("tcr_el1")
        if ttbr1 is None or tcr is None:
            out.skipped = "TTBR1_EL1/TCR_EL1 not saved (QEMU's dumps hold no system registers)"
            continue
        if c.mmu is False:
            out.skipped = "translation is off (SCTLR_EL1.M clear)"
            continue
        tables = from_registers(ttbr1, tcr, c.regs.get("sctlr_el1"))
        if tables is None:
            out.skipped = f"TCR_EL1 {tcr:#x} describes no kernel translation"
            continue
        v = judge(memory, tables, [(i, pc) for i, pc in pcs if i == c.index], budget)
        if v.run is None:
            out.root = tables.root
            out.skipped = "its TTBR1_EL1 table maps no kernel image (KPTI's tramp_pg_dir at EL0?)"
            continue
        verdicts[c.index] = v
    best: TablesVerdict | None = None
    scanned = 0
    if verdicts:
        best = max(verdicts.values(), key=lambda v: v.score)
    else:
        method = "swapper-pg-dir-scan"
        for order in ("little", "big"):
            for tables in swapper_candidates(memory, byteorder=order):
                scanned += 1
                v = judge(memory, tables, pcs, budget)
                if v.run is None or v.phys_offset is None:
                    continue
                if best is None or v.score > best.score:
                    best = v
            if best is not None:
                break
    if best is None or best.run is None or best.phys_offset is None:
        why = "no vCPU maps one" if verdicts else f"{scanned} swapper_pg_dir candidates map no kernel image"
        reasons = "; ".join(f"cpu {k.cpu}: {k.skipped}" for k in per_cpu.values() if k.skipped)
        raise NotFoundError(f"no kernel page tables found ({why}" + (f"; {reasons}" if reasons else "") + ")")
    warnings: list[str] = []
    text_va, how = _text_start(memory, best.run)
    text_link = kimage_vaddr(best.tables.va_bits)
    source = f"KIMAGE_VADDR of a {best.tables.va_bits}-bit kernel (6.1 layout)"
    if system_map and "_text" in system_map:
        text_link, source = system_map["_text"], "System.map _text"
    elif system_map and "_stext" in system_map:  # _stext - _text as the image showed it
        text_link, source = system_map["_stext"] - (best.run.va - text_va), "System.map _stext"
    koff = text_va - text_link
    if koff % MIN_KIMG_ALIGN:
        warnings.append(f"KERNELOFFSET {koff:#x} is not a multiple of 2 MiB: the image is not 2 MiB-aligned "
                        "physically (UEFI placement) or _text was misjudged: " + how)
    if best.run.voffset % MIN_KIMG_ALIGN:
        warnings.append(f"kimage_voffset {best.run.voffset:#x} is not a multiple of 2 MiB")
    pc_of = dict(pcs)
    results = []
    for c in cpus:
        out = per_cpu[c.index]
        pc = pc_of.get(c.index)
        if pc is not None:
            out.pc = pc
            out.pc_in_text = best.run.holds(pc)
        mine = verdicts.get(c.index) if verdicts else (best if pc is not None else None)
        if mine is None or mine.run is None or mine.phys_offset is None:
            if out.skipped is None or not verdicts:
                el = exception_level(c.regs.get("pstate", 0))
                out.skipped = (f"at EL{el}: no kernel PC to check the tables with" if el is not None
                               else "in AArch32 state: no kernel PC")
            continue
        tv, _ = _text_start(memory, mine.run)
        out.skipped = None  # (no TTBR1 saved, but the found tables map its PC)
        out.root = mine.tables.root
        out.text_va, out.text_pa, out.text_end = mine.run.va, mine.run.pa, mine.run.end
        out.kerneloffset, out.phys_base = tv - text_link, mine.phys_offset
        results.append(out)
    if not results:  # no vCPU at EL1: the tables alone
        results = [CpuKaslr(cpu=-1, cr3=None, kerneloffset=koff, phys_base=best.phys_offset)]
    votes = Counter((r.kerneloffset, r.phys_base) for r in results)
    for ck in per_cpu.values():
        if ck.pc is not None and ck.pc_in_text is False:
            warnings.append(f"cpu {ck.cpu}: PC {ck.pc:#x} at EL1 is outside the kernel image run "
                            f"[{best.run.va:#x}, {best.run.end:#x}) (a module or vmalloc'd code?)")
    res = PageTableKaslr(
        kerneloffset=koff, phys_base=best.phys_offset, method=method, text_va=best.run.va,
        text_pa=best.run.pa, text_end=best.run.end, tables=best.tables, agree=len(votes) == 1,
        text_link=text_link, text_link_source=source, cpus=list(per_cpu.values()), warnings=warnings,
    )
    if not res.agree:
        res.warnings.append("vCPUs disagree: " + ", ".join(
            f"cpu {r.cpu}: offset {r.kerneloffset:#x} PHYS_OFFSET {r.phys_base:#x}" for r in results
            if r.kerneloffset is not None and r.phys_base is not None))
    if system_map and "linux_banner" in system_map:
        try:
            banner = _read(memory, best.tables, system_map["linux_banner"] + koff, 13)
            res.banner_ok = banner == b"Linux version"
        except VmciError:
            res.banner_ok = False
    return res


def _read(memory: PhysicalMemory, tables: PageTables, va: int, n: int) -> bytes:
    leaf = lookup(memory, tables, va)
    return memory.read(leaf.pa + (va - leaf.va), n)


__all__ = ["MAX_LEAVES", "Budget", "ImageRun", "TablesVerdict", "image_window", "judge",
           "kaslr_from_page_tables", "kernel_pcs", "swapper_candidates"]
