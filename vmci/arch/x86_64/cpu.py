"""x86 (x86_64 and i386) vCPU state from a dump's ``CORE``/``NT_PRSTATUS`` and ``QEMU`` notes.

QEMU writes all ``CORE`` notes first, then all ``QEMU`` notes, one of each per vCPU in CPU
order, so the n-th of each kind belong together.  Register names follow the kernel's
``user_regs_struct`` for the machine (``rax``.. on x86_64, ``eax``.. on i386).  Segment
details from the QEMU note use ``<seg>`` (selector), ``<seg>_base``, ``<seg>_limit`` and
``<seg>_flags`` for cs ds es fs gs ss ldt tr; ``fs_base``/``gs_base`` coincide with the
prstatus fields of the same name.  GDTR/IDTR and control registers have their own fields of
:class:`vmci.core.dump.CpuState` (plain data; this module fills and serializes it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import construct as cs

from vmci.core.dump import CpuState, Note
from vmci.errors import FormatError, TruncatedError, UsageError
from vmci.layouts.prstatus import (
    I386_PRSTATUS_SIZE,
    I386_USER_REGS,
    PRSTATUS,
    X86_64_PRSTATUS_SIZE,
    X86_64_USER_REGS,
)
from vmci.layouts.qemu_cpu import QEMU_CPU_HEADER, QEMU_CPU_SIZES, QEMU_CPU_STATE, QEMU_GPRS

NT_PRSTATUS = 1
_PRSTATUS_MACHINE = {X86_64_PRSTATUS_SIZE: "x86_64", I386_PRSTATUS_SIZE: "i386"}
QEMU_NOTE_TYPE = 0
MACHINES = ("x86_64", "i386")
_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr")
# QEMU general registers -> i386 user_regs_struct names
_I386_NAMES = {"rax": "eax", "rbx": "ebx", "rcx": "ecx", "rdx": "edx", "rsi": "esi", "rdi": "edi",
               "rsp": "esp", "rbp": "ebp", "rip": "eip", "rflags": "eflags"}


def _machine(machine: str) -> str:
    if machine not in MACHINES:
        raise UsageError(f"unsupported CPU machine {machine!r} (expected x86_64 or i386)")
    return machine


def _gpr_name(qname: str, machine: str) -> str:
    return _I386_NAMES.get(qname, qname) if machine == "i386" else ("eflags" if qname == "rflags" else qname)


def parse_prstatus(desc: bytes, machine: str, *, order: str = "little",
                   offset: int | None = None) -> tuple[int, dict[str, int]]:
    """``(pid, regs)`` from an ``elf_prstatus`` descriptor."""
    decl = PRSTATUS[_machine(machine), order]
    if len(desc) != decl.sizeof():
        raise FormatError(f"{machine} elf_prstatus is {len(desc)} bytes, expected {decl.sizeof()}",
                          field="elf_prstatus.size", offset=offset)
    c = decl.parse(desc)
    names = X86_64_USER_REGS if machine == "x86_64" else I386_USER_REGS
    return c.pid, {n: c[n] for n in names}


def parse_qemu_cpu(desc: bytes, machine: str, *, offset: int | None = None) -> CpuState:
    """A :class:`CpuState` (index 0) from a ``QEMUCPUState`` descriptor; byte order by ``size``."""
    _machine(machine)
    if len(desc) < 8:
        raise TruncatedError(f"QEMUCPUState of {len(desc)} bytes", field="QEMUCPUState.size", offset=offset)
    order = "little"
    size = QEMU_CPU_HEADER["little"].parse(desc).size
    if size not in QEMU_CPU_SIZES and QEMU_CPU_HEADER["big"].parse(desc).size in QEMU_CPU_SIZES:
        order, size = "big", QEMU_CPU_HEADER["big"].parse(desc).size
    at = None if offset is None else offset + 4
    if size not in QEMU_CPU_SIZES:
        raise FormatError(f"unknown QEMUCPUState size {size} (known: 432, 440, 448)",
                          field="QEMUCPUState.size", offset=at)
    if len(desc) < size:
        raise TruncatedError(f"QEMUCPUState says {size} bytes but the note has {len(desc)}",
                             field="QEMUCPUState.size", offset=at)
    c = QEMU_CPU_STATE[size, order].parse(desc)
    if c.version < 1:
        raise FormatError(f"QEMUCPUState version {c.version}", field="QEMUCPUState.version", offset=offset)
    regs: dict[str, int] = {}
    for q in QEMU_GPRS:
        if machine == "i386" and q.startswith("r") and q[1:].isdigit() and c[q] == 0:
            continue  # r8..r15 do not exist on i386; QEMU leaves them zero
        regs[_gpr_name(q, machine)] = c[q]
    for s in _SEGS:
        seg = c[s]
        regs[s], regs[f"{s}_base"], regs[f"{s}_limit"], regs[f"{s}_flags"] = (
            seg.selector, seg.base, seg.limit, seg.flags)
    cpu = CpuState(index=0, regs=regs, qemu_version=c.version, sources=[f"QEMUCPUState(size={size})"])
    cpu.cr0, cpu.cr1, cpu.cr2, cpu.cr3, cpu.cr4 = c.cr
    cpu.gdt_base, cpu.gdt_limit = c.gdt.base, c.gdt.limit
    cpu.idt_base, cpu.idt_limit = c.idt.base, c.idt.limit
    if size >= 440:
        cpu.kernel_gs_base = c.kernel_gs_base
    if size >= 448:
        cpu.crash_occurred = bool(c.is_crash_occurred_cpu)
    if order == "big":
        cpu.warnings.append("QEMUCPUState is big-endian (written on a big-endian host)")
    if len(desc) > size:
        cpu.warnings.append(f"QEMUCPUState note has {len(desc) - size} bytes beyond its size field")
    return cpu


def cpus_from_notes(notes: list[Note], machine: str) -> list[CpuState]:
    """Pair the n-th ``CORE``/``NT_PRSTATUS`` note with the n-th ``QEMU`` (type 0) note.

    Either kind may be missing entirely; if both are present with different counts the
    unpaired CPUs get a warning.  A prstatus of the other machine's size (144 vs 336 bytes)
    switches that CPU to the other machine, with a warning; any other size is a FormatError.
    """
    _machine(machine)
    prs = [n for n in notes if n.name == "CORE" and n.type == NT_PRSTATUS]
    qem = [n for n in notes if n.name == "QEMU" and n.type == QEMU_NOTE_TYPE]
    out: list[CpuState] = []
    for i in range(max(len(prs), len(qem))):
        cpu = CpuState(index=i)
        m = machine
        if i < len(prs):
            # QEMU writes the i386 prstatus into ELFCLASS64 dumps of non-long-mode guests (EM_386)
            m = _PRSTATUS_MACHINE.get(len(prs[i].desc), machine)
        if i < len(qem):
            q = qem[i]
            cpu = parse_qemu_cpu(q.desc, m, offset=q.desc_offset)
            cpu.index = i
        if m != machine:
            cpu.warnings.append(f"elf_prstatus has the {m} layout although the dump says {machine}")
        if i < len(prs):
            p = prs[i]
            order = "big" if any("big-endian" in w for w in cpu.warnings) else "little"
            pid, regs = parse_prstatus(p.desc, m, order=order, offset=p.desc_offset)
            cpu.pid = pid
            for k, v in regs.items():
                if k in cpu.regs and cpu.regs[k] != v:
                    cpu.warnings.append(f"{k}: NT_PRSTATUS has {v:#x}, QEMUCPUState {cpu.regs[k]:#x}")
                cpu.regs[k] = v
            cpu.sources.insert(0, "NT_PRSTATUS")
        if prs and qem and len(prs) != len(qem):
            cpu.warnings.append(f"{len(prs)} NT_PRSTATUS notes but {len(qem)} QEMU notes")
        out.append(cpu)
    return out


def as_x86_64(cpu: CpuState) -> CpuState:
    """``cpu`` with x86_64 register names: a vCPU read from an i386 ``NT_PRSTATUS`` (QEMU writes one
    when the first vCPU is not in long mode) keeps its values under ``rax``.. names."""
    if "rip" in cpu.regs or "eip" not in cpu.regs:
        return cpu
    back = {v: k for k, v in _I386_NAMES.items() if k != "rflags"}  # eflags is eflags in both
    regs = {back.get(k, "orig_rax" if k == "orig_eax" else k): v for k, v in cpu.regs.items()}
    return replace(cpu, regs=regs)


def _build(decl: cs.Construct, values: dict[str, Any], what: str) -> bytes:
    try:
        return bytes(decl.build(values))
    except (cs.ConstructError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot build {what}: {exc}") from None


def prstatus_desc(cpu: CpuState, machine: str, *, order: str = "little") -> bytes:
    """The ``elf_prstatus`` descriptor QEMU would write for ``cpu`` (missing registers are 0)."""
    names = X86_64_USER_REGS if _machine(machine) == "x86_64" else I386_USER_REGS
    values: dict[str, Any] = {n: cpu.regs.get(n, 0) for n in names}
    values["pid"] = cpu.index + 1 if cpu.pid is None else cpu.pid
    return _build(PRSTATUS[machine, order], values, f"{machine} elf_prstatus")


def qemu_cpu_desc(cpu: CpuState, machine: str, size: int = 440, *, order: str = "little") -> bytes:
    """The ``QEMUCPUState`` descriptor of ``size`` bytes (432, 440 or 448) for ``cpu``."""
    _machine(machine)
    if size not in QEMU_CPU_SIZES:
        raise UsageError(f"QEMUCPUState size must be one of {QEMU_CPU_SIZES}, not {size}")
    r = cpu.regs
    values: dict[str, Any] = {"version": cpu.qemu_version or (2 if size >= 448 else 1), "size": size}
    for q in QEMU_GPRS:
        values[q] = r.get(_gpr_name(q, machine), 0)
    for s in _SEGS:
        values[s] = {"selector": r.get(s, 0), "limit": r.get(f"{s}_limit", 0),
                     "flags": r.get(f"{s}_flags", 0), "pad": 0, "base": r.get(f"{s}_base", 0)}
    for s, base, limit in (("gdt", cpu.gdt_base, cpu.gdt_limit), ("idt", cpu.idt_base, cpu.idt_limit)):
        values[s] = {"selector": 0, "limit": limit or 0, "flags": 0, "pad": 0, "base": base or 0}
    values["cr"] = [v or 0 for v in (cpu.cr0, cpu.cr1, cpu.cr2, cpu.cr3, cpu.cr4)]
    values["kernel_gs_base"] = cpu.kernel_gs_base or 0
    values["is_crash_occurred_cpu"] = int(bool(cpu.crash_occurred))
    return _build(QEMU_CPU_STATE[size, order], values, "QEMUCPUState")


__all__ = ["MACHINES", "as_x86_64", "cpus_from_notes", "parse_prstatus", "parse_qemu_cpu", "prstatus_desc",
           "qemu_cpu_desc"]
