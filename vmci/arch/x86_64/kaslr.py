"""KASLR from an x86_64 vCPU's page tables: the kernel image is the lowest mapping of its window.

Kernel facts (Linux x86_64): the image is mapped at ``__START_KERNEL_map`` with ``phys(v) = v -
__START_KERNEL_map + phys_base``; ``_text`` is linked at 0xffffffff81000000 and KASLR moves it by
``KERNELOFFSET``, a multiple of ``CONFIG_PHYSICAL_ALIGN`` (2 MiB).  Early boot clears the PMDs of
``level2_kernel_pgt`` below ``_text`` and ``cleanup_highmap()`` clears those below ``_text`` or
beyond ``_end``/``_brk_end`` rounded up to 2 MiB, so the lowest mapped address in
[0xffffffff80000000, 0xffffffffc0000000) is ``_text`` itself (modules start at 0xffffffffc0000000
with KASLR, 0xffffffffa0000000 without; either way above the image).  The IDT's gate 0 (the
divide-error handler) points into the text: crash's "IDT method" when no text mapping survives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping as StrMap
from collections.abc import Sequence

from vmci.arch.base import CpuKaslr, PageTableKaslr, read_mapped
from vmci.arch.x86_64.consts import (
    CR0_PG,
    CR4_PAE,
    DEFAULT_TEXT,
    KTEXT_END,
    PHYSICAL_ALIGN,
    START_KERNEL_MAP,
)
from vmci.arch.x86_64.paging import kernel_root, lookup, page_tables, top_slot, translate, walk
from vmci.core.dump import CpuState
from vmci.core.memory import PhysicalMemory
from vmci.errors import NotFoundError, VmciError
from vmci.layouts.qemu_cpu import IDT_GATE64

Extent = tuple[int, int, int]  # (va, pa, end) of the image's first mapping and linear run


def decode_idt_gate(raw: bytes) -> tuple[int, bool]:
    """``(handler address, present)`` of a 16-byte 64-bit IDT gate."""
    g = IDT_GATE64.parse(raw)
    return g.offset_low | g.offset_middle << 16 | g.offset_high << 32, bool(g.attrs & 0x8000)


def _text_extent(memory: PhysicalMemory, root: int, la57: bool, mask: int) -> Extent | None:
    """``(va, pa, end)`` of the lowest kernel-image mapping and the end of its linear run."""
    first = None
    end = 0
    for m in walk(memory, root, START_KERNEL_MAP, KTEXT_END, la57, mask):
        if first is None:
            first, end = m, m.va + m.size
        elif m.va == end and m.pa - m.va == first.pa - first.va:
            end = m.va + m.size
        else:
            break
    return None if first is None else (first.va, first.pa, end)


def _one_cpu(memory: PhysicalMemory, cpu: CpuState, mask: int, pti: bool | None, text_link: int,
             extents: dict[tuple[bool, object], Extent | None]) -> CpuKaslr:
    out = CpuKaslr(cpu=cpu.index, cr3=cpu.cr3, la57=cpu.la57)
    if cpu.cr3 is None or cpu.cr3 == 0:
        out.skipped = "CR3 is zero or unknown"
        return out
    if cpu.cr0 is not None and not cpu.cr0 & CR0_PG:
        out.skipped = "paging is off (CR0.PG clear)"
        return out
    if cpu.cr4 is not None and not cpu.cr4 & CR4_PAE:
        out.skipped = "not in long mode (CR4.PAE clear)"
        return out
    roots = [kernel_root(cpu.cr3, mask=mask, pti=True), kernel_root(cpu.cr3, mask=mask, pti=False)]
    if pti is not None:
        roots = [kernel_root(cpu.cr3, mask=mask, pti=pti)]
    # auto mode: without PTI an odd-page PGD is legal, so the even page wins only if it looks like a
    # kernel's (2 MiB-aligned text in readable memory); else the first root that maps anything
    some: list[tuple[int, Extent]] = []
    out.root, ext = roots[0], None
    for root in dict.fromkeys(roots):
        # the kernel text range hangs off one top-level entry, shared by every process's PGD
        top = root + top_slot(START_KERNEL_MAP, out.la57) * 8
        key = (out.la57, memory.read(top, 8)) if memory.readable(top, 8) else (out.la57, root)
        if key not in extents:
            extents[key] = _text_extent(memory, root, out.la57, mask)
        e = extents[key]
        if e is None:
            continue
        if e[0] % PHYSICAL_ALIGN == 0 and memory.readable(e[1], 1):
            out.root, ext = root, e
            break
        some.append((root, e))
    else:
        if some:
            out.root, ext = some[0]
    if ext is not None:
        out.text_va, out.text_pa, out.text_end = ext
    if out.text_va is not None and out.text_pa is not None:
        out.phys_base = out.text_pa - (out.text_va - START_KERNEL_MAP)
        out.kerneloffset = out.text_va - out.text_va % PHYSICAL_ALIGN - text_link
    if cpu.idt_base:
        out.idt_base = cpu.idt_base
        try:
            out.idt_pa = translate(memory, out.root, cpu.idt_base, out.la57, mask)
            out.idt_handler, present = decode_idt_gate(memory.read(out.idt_pa, IDT_GATE64.sizeof()))
        except VmciError:
            out.idt_handler = None
        else:
            if not present:
                out.idt_handler = None
        if (out.idt_handler is not None and out.text_va is not None and out.text_end is not None
                and out.phys_base is not None):
            out.idt_handler_in_text = out.text_va <= out.idt_handler < out.text_end
            try:
                hpa = translate(memory, out.root, out.idt_handler, out.la57, mask)
            except VmciError:
                out.idt_handler_matches_phys_base = False
            else:
                out.idt_handler_matches_phys_base = hpa == out.idt_handler - START_KERNEL_MAP + out.phys_base
    return out


def kaslr_from_page_tables(
    memory: PhysicalMemory,
    cpus: Sequence[CpuState],
    *,
    mask: int = 0,
    system_map: StrMap[str, int] | None = None,
    pti: bool | None = None,
    text_link: int = DEFAULT_TEXT,
) -> PageTableKaslr:
    """Find ``KERNELOFFSET`` and ``phys_base`` from the vCPUs' page tables.

    Method: per vCPU with paging on, the lowest mapped page in [0xffffffff80000000,
    0xffffffffc0000000) is ``_text``; ``phys_base = PA - (VA - 0xffffffff80000000)`` and
    ``KERNELOFFSET = VA - link(_text)``.  ``link(_text)`` is ``text_link`` (0xffffffff81000000)
    unless ``system_map`` gives ``_text``/``_stext``.  The IDT's gate 0 corroborates; with a
    System.map the divide-error handler and ``linux_banner`` are checked too, and if no text
    mapping is found the IDT alone gives the answer.  ``pti=None`` tries the even page of CR3
    first.  ``mask`` is the SME encryption mask.  Raises :class:`NotFoundError` when no vCPU helps.
    """
    source = "default 0xffffffff81000000"
    if system_map:
        for name in ("_text", "_stext"):
            if name in system_map:
                text_link, source = system_map[name], f"System.map {name}"
                break
    extents: dict[tuple[bool, object], Extent | None] = {}  # shared by vCPUs
    per_cpu = [_one_cpu(memory, c, mask, pti, text_link, extents) for c in cpus]
    found = [c for c in per_cpu if c.kerneloffset is not None]
    method = "page-tables"
    handler_sym = None
    if system_map:
        handler_sym = system_map.get("asm_exc_divide_error", system_map.get("divide_error"))
    if not found and handler_sym is not None and system_map is not None:
        # crash's IDT method: the gate gives the offset; the IDT's physical address (IDTR may be
        # the cpu_entry_area alias, which maps the same page) against idt_table gives phys_base
        idt_sym = system_map.get("idt_table")
        for c in per_cpu:
            if c.idt_handler is None or c.idt_pa is None:
                continue
            koff = c.idt_handler - handler_sym
            if idt_sym is not None:
                pbase = c.idt_pa - (idt_sym + koff - START_KERNEL_MAP)
            else:
                try:
                    pbase = translate(memory, c.root or 0, c.idt_handler, c.la57, mask) - (
                        c.idt_handler - START_KERNEL_MAP)
                except VmciError:
                    continue
            c.kerneloffset, c.phys_base = koff, pbase
            c.text_va = c.text_end = text_link + koff
            c.text_pa = c.text_va - START_KERNEL_MAP + pbase
            found.append(c)
        method = "idt"
    if not found:
        reasons = "; ".join(f"cpu {c.cpu}: {c.skipped or 'no kernel text mapping'}" for c in per_cpu)
        raise NotFoundError(f"no kernel text mapping in the vCPUs' page tables ({reasons or 'no vCPUs'})")
    votes = Counter((c.kerneloffset, c.phys_base) for c in found)
    top, _ = votes.most_common(1)[0]
    best = next(c for c in found if (c.kerneloffset, c.phys_base) == top)
    # every vCPU in ``found`` has its offset, phys_base and text mapping set
    assert best.kerneloffset is not None and best.phys_base is not None
    assert best.text_va is not None and best.text_pa is not None and best.root is not None
    koff, pbase = best.kerneloffset, best.phys_base
    tables = page_tables(best.root, la57=best.la57, mask=mask)
    res = PageTableKaslr(
        kerneloffset=koff, phys_base=pbase, method=method, text_va=best.text_va, text_pa=best.text_pa,
        text_end=best.text_end or best.text_va, tables=tables, agree=len(votes) == 1,
        cpus=per_cpu, text_link=text_link, text_link_source=source,
    )
    if not res.agree:
        res.warnings.append("vCPUs disagree: " + ", ".join(
            f"cpu {c.cpu}: offset {c.kerneloffset:#x} phys_base {c.phys_base}" for c in found))
    if koff % PHYSICAL_ALIGN:
        res.warnings.append(f"KERNELOFFSET {koff:#x} is not a multiple of CONFIG_PHYSICAL_ALIGN (2 MiB)")
    for c in per_cpu:
        if c.idt_handler is not None and c.idt_handler_in_text is False:
            res.warnings.append(f"cpu {c.cpu}: IDT gate 0 handler {c.idt_handler:#x} is outside kernel text")
    if handler_sym is not None and best.idt_handler is not None:
        res.idt_handler_matches_symbol = best.idt_handler == handler_sym + koff
    if system_map and "linux_banner" in system_map:
        try:
            banner = read_mapped(lambda v: lookup(memory, tables.root, v, best.la57, mask), memory,
                                 system_map["linux_banner"] + koff, 13)
        except VmciError:
            res.banner_ok = False
        else:
            res.banner_ok = banner == b"Linux version"
    return res


__all__ = ["decode_idt_gate", "kaslr_from_page_tables"]
