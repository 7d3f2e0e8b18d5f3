"""arm64 vCPU state from a dump's ``CORE``/``NT_PRSTATUS`` notes, and the notes QEMU writes.

QEMU (target/arm/arch_dump.c, ``arm_cpu_write_elf64_note``) writes per vCPU a ``CORE``
``NT_PRSTATUS`` note (x0..x30, sp, pc, pstate: the *current* SP, ``env->pc`` and PSTATE with the
exception level in bits [3:2]), a ``CORE`` ``NT_PRFPREG`` note (the V registers, fpsr, fpcr) and,
for SVE CPUs, a ``LINUX`` ``NT_ARM_SVE`` note; there is no ``QEMU`` note and no system register
anywhere in the dump.  Everything is in the guest's byte order (``SCTLR_EL1.EE``), which the ELF
header states.  Registers go into :class:`~vmci.core.dump.CpuState` ``regs`` under the kernel's
``user_pt_regs`` names; :attr:`CpuState.mmu` says translation is on when the vCPU runs at EL0, or
at EL1 with a kernel (upper-half) PC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import construct as cs

from vmci.arch.aarch64.consts import PSTATE_EL_MASK, PSTATE_EL_SHIFT, PSTATE_NRW
from vmci.core.dump import CpuState, Note
from vmci.errors import FormatError, UsageError
from vmci.layouts.prstatus import (
    AARCH64_PRSTATUS_SIZE,
    AARCH64_USER_REGS,
    ARM_PRSTATUS_SIZE,
    ARM_USER_REGS,
    FPREGSET,
    NT_PRFPREG,
    PRSTATUS,
    PRSTATUS_SIZES,
)

NT_PRSTATUS = 1
_REGS = {"aarch64": AARCH64_USER_REGS, "arm": ARM_USER_REGS}
_SIZES = {"aarch64": AARCH64_PRSTATUS_SIZE, "arm": ARM_PRSTATUS_SIZE}


def exception_level(pstate: int) -> int | None:
    """The exception level of an AArch64 PSTATE (None in AArch32 state)."""
    if pstate & PSTATE_NRW:
        return None
    return (pstate >> PSTATE_EL_SHIFT) & PSTATE_EL_MASK


def mmu_on(pc: int, pstate: int) -> bool | None:
    """Whether a Linux vCPU runs with translation on, from its PC and PSTATE: at EL0 always, at EL1
    when the PC is a kernel (TTBR1) address, not at EL1 with a low PC (before the MMU is on);
    None at EL2/EL3 or in AArch32 state (not Linux's business)."""
    el = exception_level(pstate)
    if el == 0:
        return True
    if el == 1:
        return pc >> 63 == 1
    return None


def parse_prstatus(desc: bytes, machine: str = "aarch64", *, order: str = "little",
                   offset: int | None = None) -> tuple[int, dict[str, int]]:
    """``(pid, regs)`` from an arm64 (or 32-bit arm) ``elf_prstatus`` descriptor."""
    if machine not in _REGS:
        raise UsageError(f"unsupported CPU machine {machine!r} (expected aarch64 or arm)")
    decl = PRSTATUS[machine, order]
    if len(desc) != decl.sizeof():
        other = PRSTATUS_SIZES.get(len(desc))
        hint = f" (the {other} layout)" if other else ""
        raise FormatError(f"{machine} elf_prstatus is {len(desc)} bytes{hint}, expected {decl.sizeof()}",
                          field="elf_prstatus.size", offset=offset)
    c = decl.parse(desc)
    return c.pid, {n: c[n] for n in _REGS[machine]}


def cpus_from_notes(notes: Sequence[Note], machine: str = "aarch64", *,
                    byteorder: str = "little") -> list[CpuState]:
    """One :class:`CpuState` per ``CORE``/``NT_PRSTATUS`` note, in note order (QEMU's CPU order).

    A 32-bit arm layout (148 bytes) in an arm64 dump is read as such with a warning (a vCPU in
    AArch32 state keeps the 64-bit layout; this is a dump of another CPU); any other size is a
    :class:`~vmci.errors.FormatError`."""
    prs = [n for n in notes if n.name == "CORE" and n.type == NT_PRSTATUS]
    out: list[CpuState] = []
    for i, p in enumerate(prs):
        m = machine
        if len(p.desc) in (AARCH64_PRSTATUS_SIZE, ARM_PRSTATUS_SIZE):
            m = "aarch64" if len(p.desc) == AARCH64_PRSTATUS_SIZE else "arm"
        pid, regs = parse_prstatus(p.desc, m, order=byteorder, offset=p.desc_offset)
        cpu = CpuState(index=i, pid=pid, regs=regs, sources=["NT_PRSTATUS"])
        if m != machine:
            cpu.warnings.append(f"elf_prstatus has the {m} layout although the dump says {machine}")
        if m == "aarch64":
            cpu.mmu = mmu_on(regs["pc"], regs["pstate"])
            if regs["pstate"] & PSTATE_NRW:
                cpu.warnings.append("the vCPU is in AArch32 state: x0..x14 mirror r0..r14, sp is 0")
        out.append(cpu)
    return out


def _build(decl: cs.Construct, values: dict[str, Any], what: str) -> bytes:
    try:
        return bytes(decl.build(values))
    except (cs.ConstructError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot build {what}: {exc}") from None


def prstatus_desc(cpu: CpuState, machine: str = "aarch64", *, order: str = "little") -> bytes:
    """The ``elf_prstatus`` descriptor QEMU writes for ``cpu`` (missing registers are 0,
    ``pr_fpvalid`` 1 as QEMU sets it)."""
    if machine not in _REGS:
        raise UsageError(f"unsupported CPU machine {machine!r} (expected aarch64 or arm)")
    values: dict[str, Any] = {n: cpu.regs.get(n, 0) for n in _REGS[machine]}
    values["pid"] = cpu.index + 1 if cpu.pid is None else cpu.pid
    values["fpvalid"] = 1
    return _build(PRSTATUS[machine, order], values, f"{machine} elf_prstatus")


def fpregset_desc(*, order: str = "little") -> bytes:
    """A ``CORE``/``NT_PRFPREG`` descriptor with every V register, fpsr and fpcr zero."""
    return _build(FPREGSET[order], {"vregs": [0] * 64, "fpsr": 0, "fpcr": 0}, "user_fpsimd_state")


def qemu_cpu_notes(cpus: Sequence[CpuState], *, order: str = "little") -> list[tuple[str, int, bytes]]:
    """The notes QEMU writes per vCPU, in its order: ``CORE`` NT_PRSTATUS then ``CORE`` NT_PRFPREG
    for each vCPU in turn (``arm_cpu_write_elf64_note``; no SVE)."""
    out: list[tuple[str, int, bytes]] = []
    for c in cpus:
        out.append(("CORE", NT_PRSTATUS, prstatus_desc(c, order=order)))
        out.append(("CORE", NT_PRFPREG, fpregset_desc(order=order)))
    return out


__all__ = ["cpus_from_notes", "exception_level", "fpregset_desc", "mmu_on", "parse_prstatus", "prstatus_desc",
           "qemu_cpu_notes"]
