"""QEMU's per-CPU ``QEMUCPUState`` note descriptor (name ``QEMU``, type 0) for x86, and the
x86 structures that its registers point at (IDT gates, page-table pages).

One struct serves both i386 and x86_64 targets: registers are always 64-bit (``r8``..``r15``
stay zero on i386).  Optional fields were appended without bumping ``version``; readers key
on ``size``: 432 (no ``kernel_gs_base``), 440 (QEMU 3.0 and later), 448 (adds
``is_crash_occurred_cpu`` + 7 pad bytes, version 2).  QEMU copies the struct from host
memory without byte swapping, so a big-endian host would write it big-endian.
"""

from __future__ import annotations

import construct as cs

QEMU_GPRS = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags",
)
QEMU_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
QEMU_CPU_SIZES = (432, 440, 448)


def _ints(order: str) -> tuple[cs.Construct, cs.Construct, cs.Construct]:
    if order == "little":
        return cs.Int8ul, cs.Int32ul, cs.Int64ul
    return cs.Int8ub, cs.Int32ub, cs.Int64ub


def qemu_segment(order: str = "little") -> cs.Struct:
    """``QEMUCPUSegment``: 24 bytes."""
    _, u32, u64 = _ints(order)
    return cs.Struct("selector" / u32, "limit" / u32, "flags" / u32, "pad" / u32, "base" / u64)


def qemu_cpu_header(order: str = "little") -> cs.Struct:
    """The two leading fields, enough to pick the full declaration."""
    _, u32, _ = _ints(order)
    return cs.Struct("version" / u32, "size" / u32)


def qemu_cpu_state(size: int, order: str = "little") -> cs.Struct:
    """``QEMUCPUState`` of the given total ``size`` (one of :data:`QEMU_CPU_SIZES`)."""
    if size not in QEMU_CPU_SIZES:
        raise ValueError(f"no QEMUCPUState of size {size}")
    u8, u32, u64 = _ints(order)
    seg = qemu_segment(order)
    fields: list[cs.Construct] = [
        "version" / u32,
        "size" / u32,
        *[name / u64 for name in QEMU_GPRS],
        *[name / seg for name in QEMU_SEGMENTS],
        "cr" / cs.Array(5, u64),
    ]
    if size >= 440:
        fields.append("kernel_gs_base" / u64)
    if size >= 448:
        fields += ["is_crash_occurred_cpu" / u8, "pad" / cs.Padding(7)]
    return cs.Struct(*fields)


QEMU_CPU_STATE = {
    (size, order): qemu_cpu_state(size, order) for size in QEMU_CPU_SIZES for order in ("little", "big")
}
QEMU_CPU_HEADER = {order: qemu_cpu_header(order) for order in ("little", "big")}

for (_size, _order), _decl in QEMU_CPU_STATE.items():
    assert _decl.sizeof() == _size

# --- x86 structures the CPU state points at (always little-endian: x86 hardware formats) ---

#: One 4 KiB page-table page: 512 entries at every level (PML5, PML4, PDPT, PD, PT).
PAGE_TABLE = cs.Array(512, cs.Int64ul)

#: A 64-bit IDT gate descriptor (16 bytes).  ``attrs`` packs IST (bits 0-2), type (8-11),
#: DPL (13-14) and present (15).
IDT_GATE64 = cs.Struct(
    "offset_low" / cs.Int16ul,
    "segment" / cs.Int16ul,
    "attrs" / cs.Int16ul,
    "offset_middle" / cs.Int16ul,
    "offset_high" / cs.Int32ul,
    "reserved" / cs.Int32ul,
)

#: The first 16 GDT descriptors (8 bytes each), as Linux lays out its per-CPU GDT.
GDT_ENTRIES = cs.Array(16, cs.Int64ul)
