"""x86_64 paging over guest-physical memory, and KASLR discovery from a vCPU's page tables.

Paging facts used here (Intel SDM vol. 3 ch. 4): 4-level paging, or 5-level when CR4.LA57
(bit 12) is set; entries are 64-bit, bit 0 present, bit 7 (PS) makes a PDPT entry a 1 GiB
leaf and a PD entry a 2 MiB leaf, bits 12..51 hold the physical address and bit 63 is NX.
With AMD SME/SEV the encryption bit (the kernel's ``sme_mask``) sits inside the address bits
and must be removed before the address is used.

Kernel facts (Linux x86_64): the kernel image is mapped at ``__START_KERNEL_map`` =
0xffffffff80000000 with ``phys(v) = v - 0xffffffff80000000 + phys_base``; the link address of
``_text`` is 0xffffffff81000000 (``CONFIG_PHYSICAL_START`` = 0x1000000) and KASLR moves it by
``KERNELOFFSET``, a multiple of ``CONFIG_PHYSICAL_ALIGN`` (2 MiB).  Early boot clears the PMDs of
``level2_kernel_pgt`` below ``_text`` and ``cleanup_highmap()`` clears those below ``_text`` or
beyond ``_end``/``_brk_end`` rounded up to 2 MiB, so the lowest mapped address in
[0xffffffff80000000, 0xffffffffc0000000) is ``_text`` itself (modules start at 0xffffffffc0000000
with KASLR, 0xffffffffa0000000 without; either way above the image).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from vmci.arch.x86_64.cpu import CpuState
from vmci.core.memory import PhysicalMemory
from vmci.errors import FormatError, MemoryReadError, NotFoundError, UsageError, VmciError
from vmci.layouts.qemu_cpu import IDT_GATE64, PAGE_TABLE

START_KERNEL_MAP = 0xFFFFFFFF80000000
KTEXT_END = 0xFFFFFFFFC0000000  # KERNEL_IMAGE_SIZE (1 GiB) above __START_KERNEL_map with KASLR
DEFAULT_TEXT = 0xFFFFFFFF81000000  # link address of _text with CONFIG_PHYSICAL_START=0x1000000
PHYSICAL_ALIGN = 0x200000  # CONFIG_PHYSICAL_ALIGN: KASLR offsets are multiples of it

PTE_PRESENT = 1 << 0
PTE_RW = 1 << 1
PTE_USER = 1 << 2
PTE_PS = 1 << 7
PTE_GLOBAL = 1 << 8
PTE_NX = 1 << 63
ADDR_MASK = 0x000F_FFFF_FFFF_F000  # bits 12..51
CR0_PE = 1 << 0
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
CR4_LA57 = 1 << 12
PTI_USER_PGD = 1 << 12  # the PTI user PGD is the odd page of an 8 KiB-aligned pair

_SHIFTS = {False: (39, 30, 21, 12), True: (48, 39, 30, 21, 12)}
_LEAF_SHIFTS = (30, 21)  # levels where PS makes a leaf (1 GiB, 2 MiB); 12 is always a leaf
_sub = PAGE_TABLE.subcon
_TABLE = struct.Struct(f"{_sub.fmtstr[0]}{PAGE_TABLE.count}{_sub.fmtstr[1:]}")  # from the declaration
_ENTRY = struct.Struct(_sub.fmtstr)
assert _TABLE.size == PAGE_TABLE.sizeof()


class TranslationError(MemoryReadError):
    """A virtual address has no valid mapping (or a page table is unreadable)."""

    def __init__(self, message: str, *, vaddr: int, paddr: int = 0) -> None:
        self.vaddr = vaddr
        super().__init__(message, paddr=paddr)


class Mapping(NamedTuple):
    """One leaf mapping: ``size`` bytes at virtual ``va`` map to physical ``pa``."""

    va: int
    pa: int
    size: int


def va_bits(la57: bool) -> int:
    return 57 if la57 else 48


def canonical(lin: int, la57: bool) -> int:
    """Sign-extend a ``va_bits``-bit linear address to 64 bits."""
    bits = va_bits(la57)
    return lin | ((1 << 64) - (1 << bits)) if lin >> (bits - 1) & 1 else lin


def is_canonical(va: int, la57: bool) -> bool:
    bits = va_bits(la57)
    top = va >> (bits - 1)
    return 0 <= va < 1 << 64 and top in (0, (1 << (65 - bits)) - 1)


def kernel_root(cr3: int, *, mask: int = 0, pti: bool = True) -> int:
    """Physical address of the kernel's top-level table from a CR3 value.

    Bits 0..11 are PCID/flags and the SME bit may be set, so both go.  With page-table
    isolation the kernel allocates each PGD as an 8 KiB-aligned pair, kernel half first and
    the user copy (which maps almost no kernel text) at +4096; a vCPU caught in user mode has
    CR3 pointing at the user copy, so bit 12 is cleared to get back to the kernel PGD.
    """
    root = cr3 & ADDR_MASK & ~mask
    return root & ~PTI_USER_PGD if pti else root


def _entry_addr(entry: int, mask: int, shift: int) -> int:
    return entry & ~mask & ADDR_MASK & ~((1 << shift) - 1)


def translate(memory: PhysicalMemory, root: int, va: int, la57: bool = False, mask: int = 0) -> int:
    """Physical address of ``va`` through the tables at ``root``; raises :class:`TranslationError`."""
    if not is_canonical(va, la57):
        raise TranslationError(f"virtual address {va:#x} is not canonical", vaddr=va)
    table = root & ADDR_MASK & ~mask
    for shift in _SHIFTS[la57]:
        slot = table + ((va >> shift) & 511) * 8
        try:
            (entry,) = _ENTRY.unpack(memory.read(slot, 8))
        except VmciError as exc:
            raise TranslationError(f"page table entry for {va:#x} at {slot:#x} unreadable: {exc}",
                                   vaddr=va, paddr=slot) from None
        if not entry & PTE_PRESENT:
            raise TranslationError(f"virtual address {va:#x} is not mapped (entry at {slot:#x})",
                                   vaddr=va, paddr=slot)
        if shift == 12 or (shift in _LEAF_SHIFTS and entry & PTE_PS):
            return _entry_addr(entry, mask, shift) | (va & ((1 << shift) - 1))
        table = _entry_addr(entry, mask, 12)
    raise AssertionError("unreachable")


def read_virtual(memory: PhysicalMemory, root: int, va: int, n: int, la57: bool = False,
                 mask: int = 0) -> bytes:
    """Read ``n`` bytes at kernel virtual ``va``, translating page by page."""
    if n < 0:
        raise UsageError(f"invalid read of {n} bytes")
    parts = []
    pos, left = va, n
    while left > 0:
        take = min(left, 4096 - (pos & 4095))
        parts.append(memory.read(translate(memory, root, pos, la57, mask), take))
        pos, left = pos + take, left - take
    return b"".join(parts)


class KernelVirtualMemory:
    """Reads kernel virtual addresses of one address space (a root table)."""

    def __init__(self, memory: PhysicalMemory, root: int, la57: bool = False, mask: int = 0) -> None:
        self.memory, self.root, self.la57, self.mask = memory, root, la57, mask

    def translate(self, va: int) -> int:
        return translate(self.memory, self.root, va, self.la57, self.mask)

    def read(self, va: int, n: int) -> bytes:
        return read_virtual(self.memory, self.root, va, n, self.la57, self.mask)

    def walk(self, start: int = 0, end: int = 1 << 64) -> Iterator[Mapping]:
        return walk(self.memory, self.root, start, end, self.la57, self.mask)


def walk(memory: PhysicalMemory, root: int, start: int = 0, end: int = 1 << 64, la57: bool = False,
         mask: int = 0) -> Iterator[Mapping]:
    """Leaf mappings overlapping ``[start, end)`` in ascending VA order, clipped to that range.

    Whole tables are read at once (and cached for this walk); unreadable tables are skipped.
    """
    bits = va_bits(la57)
    half = 1 << (bits - 1)
    high = (1 << 64) - half  # first canonical address of the upper half
    # canonical ranges -> linear (bits-wide) ranges; canonical order equals linear order
    spans = []
    if start < half:
        spans.append((start, min(end, half)))
    if end > high:
        s = max(start, high)
        spans.append((s - high + half, end - high + half))
    cache: dict[int, tuple[int, ...] | None] = {}
    shifts = _SHIFTS[la57]

    def table(pa: int) -> tuple[int, ...] | None:
        if pa not in cache:
            try:
                cache[pa] = _TABLE.unpack(memory.read(pa, 4096))
            except VmciError:
                cache[pa] = None
        return cache[pa]

    def descend(pa: int, level: int, base: int, lo: int, hi: int) -> Iterator[Mapping]:
        entries = table(pa)
        if entries is None:
            return
        shift = shifts[level]
        first = max(0, (lo - base) >> shift)
        last = min(511, (hi - 1 - base) >> shift)
        for i in [i for i in range(first, last + 1) if entries[i] & PTE_PRESENT]:
            e = entries[i]
            lin = base + (i << shift)
            if shift == 12 or (shift in _LEAF_SHIFTS and e & PTE_PS):
                size = 1 << shift
                pa0 = _entry_addr(e, mask, shift)
                a, b = max(lin, lo), min(lin + size, hi)
                yield Mapping(canonical(a, la57), pa0 + (a - lin), b - a)
            else:
                yield from descend(_entry_addr(e, mask, 12), level + 1, lin, lo, hi)

    for lo, hi in spans:
        if lo < hi:
            yield from descend(root & ADDR_MASK & ~mask, 0, 0, lo, hi)


# --- KASLR -------------------------------------------------------------------------------


def parse_system_map(text: str) -> dict[str, int]:
    """``name -> address`` from a System.map (``addr type name`` lines; the first of a name wins)."""
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise FormatError(f"System.map line {n} has {len(parts)} fields, expected 3", field=f"line {n}")
        try:
            addr = int(parts[0], 16)
        except ValueError:
            raise FormatError(f"System.map line {n}: bad address {parts[0][:20]!r}",
                              field=f"line {n}") from None
        out.setdefault(parts[2], addr)
    return out


def decode_idt_gate(raw: bytes) -> tuple[int, bool]:
    """``(handler address, present)`` of a 16-byte 64-bit IDT gate."""
    g = IDT_GATE64.parse(raw)
    return g.offset_low | g.offset_middle << 16 | g.offset_high << 32, bool(g.attrs & 0x8000)


@dataclass
class CpuKaslr:
    """What one vCPU's page tables say."""

    cpu: int
    cr3: int | None
    root: int | None = None
    la57: bool = False
    text_va: int | None = None
    text_pa: int | None = None
    text_end: int | None = None
    kerneloffset: int | None = None
    phys_base: int | None = None
    idt_base: int | None = None
    idt_pa: int | None = None
    idt_handler: int | None = None
    idt_handler_in_text: bool | None = None
    idt_handler_matches_phys_base: bool | None = None
    skipped: str | None = None


@dataclass
class KaslrResult:
    """The kernel's virtual KASLR offset and ``phys_base``, with the evidence for them."""

    kerneloffset: int
    phys_base: int
    method: str
    text_va: int
    text_pa: int
    text_end: int
    la57: bool
    root: int
    agree: bool
    cpus: list[CpuKaslr] = field(default_factory=list)
    text_link: int = DEFAULT_TEXT
    text_link_source: str = "default 0xffffffff81000000"
    banner_ok: bool | None = None
    idt_handler_matches_symbol: bool | None = None
    warnings: list[str] = field(default_factory=list)

    def symbol(self, link_addr: int) -> int:
        """Runtime address of a symbol whose System.map (link) address is ``link_addr``."""
        return link_addr + self.kerneloffset

    def kernel_phys(self, va: int) -> int:
        """Physical address of a kernel-image VA."""
        return va - START_KERNEL_MAP + self.phys_base

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text_extent(memory: PhysicalMemory, root: int, la57: bool, mask: int) -> tuple[int, int, int] | None:
    """``(va, pa, end)`` of the lowest kernel-image mapping and the end of its linear run."""
    first: Mapping | None = None
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
             extents: dict[tuple[bool, object], tuple[int, int, int] | None]) -> CpuKaslr:
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
    some: list[tuple[int, tuple[int, int, int]]] = []
    out.root, ext = roots[0], None
    for root in dict.fromkeys(roots):
        # the kernel text range hangs off one top-level entry, shared by every process's PGD
        top = root + ((START_KERNEL_MAP >> _SHIFTS[out.la57][0]) & 511) * 8
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
    cpus: list[CpuState],
    *,
    mask: int = 0,
    system_map: dict[str, int] | None = None,
    pti: bool | None = None,
    text_link: int = DEFAULT_TEXT,
) -> KaslrResult:
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
    extents: dict[tuple[bool, object], tuple[int, int, int] | None] = {}  # shared by vCPUs
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
    res = KaslrResult(
        kerneloffset=koff, phys_base=pbase, method=method, text_va=best.text_va, text_pa=best.text_pa,
        text_end=best.text_end or best.text_va, la57=best.la57, root=best.root, agree=len(votes) == 1,
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
            banner = read_virtual(memory, best.root, system_map["linux_banner"] + koff, 13, best.la57, mask)
        except VmciError:
            res.banner_ok = False
        else:
            res.banner_ok = banner == b"Linux version"
    return res
