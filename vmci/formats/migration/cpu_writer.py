"""The ``cpu`` and ``cpu_common`` device sections of a migration stream, from :class:`CpuState`.

The payload and its VM-description entry both come from the field lists in
:mod:`vmci.layouts.migration_cpu` (``vmstate_x86_cpu`` version 12, x86_64 target; or
``vmstate_arm_cpu`` version 22 of an AArch64 CPU; no subsections).  Registers a
:class:`CpuState` does not carry get the values a running Linux guest under QEMU would show (FPU
control word, MXCSR, PAT, EFER from the paging mode).  An arm64 vCPU's system registers
(``ttbr1_el1``, ``tcr_el1``, ``sctlr_el1``, ... in ``regs``) go into the ``cpreg`` arrays under
their KVM register IDs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO

import construct as cs

from vmci.core.dump import CpuState
from vmci.core.memory import SparseMemory
from vmci.errors import UsageError
from vmci.formats.migration.writer import Device, standard_devices, write_migration
from vmci.layouts.migration_cpu import (
    AARCH64_PC,
    AARCH64_XREGS,
    ARM64_SYSREGS,
    ARM_CPREG_INDEXES,
    ARM_CPREG_LEN,
    ARM_CPREG_VALUES,
    ARM_CPSR,
    ARM_CPU_VERSION,
    ARM_SP_EL,
    CPU_COMMON_FIELDS,
    CPU_COMMON_IDSTR,
    CPU_COMMON_STATE,
    CPU_COMMON_VERSION,
    CPU_IDSTR,
    CPU_VERSION,
    CR,
    EFER,
    EFLAGS,
    EIP,
    GDT,
    GPR_ORDER,
    IDT,
    KERNEL_GS_BASE,
    LDT,
    REGS,
    SEG_ORDER,
    SEGS,
    TR,
    X86_64_CPU_FIELDS,
    X86_64_CPU_STATE,
    aarch64_cpu_fields,
    arm64_sysreg_id,
    vmstate_struct,
)

CR0_PG = 1 << 31
CR4_PAE = 1 << 5
EFER_LONG = 0xD01  # SCE | LME | LMA | NXE: what a 64-bit Linux kernel runs with
_DEFAULTS = {"env.fpuc": 0x37F, "env.mxcsr": 0x1F80, "env.a20_mask": -1, "env.pat": 0x0007040600070406,
             "env.mp_state": 0, "env.exception_nr": -1, "env.smbase": 0x30000}


def _zeros(decl: cs.Construct) -> Any:
    """A value of ``decl`` with every integer 0 and every buffer zero-filled."""
    while isinstance(decl, cs.Renamed):
        decl = decl.subcon
    if isinstance(decl, cs.Struct):
        return {sub.name: _zeros(sub) for sub in decl.subcons if sub.name}
    if isinstance(decl, cs.Array):
        return [_zeros(decl.subcon) for _ in range(decl.count)]
    if isinstance(decl, cs.BytesInteger):
        return 0
    return bytes(decl.sizeof())


def _segment(cpu: CpuState, name: str) -> dict[str, int]:
    r = cpu.regs
    return {"selector": r.get(name, 0), "base": r.get(f"{name}_base", 0),
            "limit": r.get(f"{name}_limit", 0), "flags": r.get(f"{name}_flags", 0)}


def cpu_values(cpu: CpuState) -> dict[str, Any]:
    """The field values of ``cpu``'s section (missing registers are 0)."""
    v: dict[str, Any] = _zeros(X86_64_CPU_STATE)
    v.update(_DEFAULTS)
    r = cpu.regs
    v[REGS] = [r.get(n, 0) for n in GPR_ORDER]
    v[EIP], v[EFLAGS] = r.get("rip", 0), r.get("eflags", r.get("rflags", 0x2))
    v[SEGS] = [_segment(cpu, n) for n in SEG_ORDER]
    v[LDT], v[TR] = _segment(cpu, "ldt"), _segment(cpu, "tr")
    v[GDT] = {"selector": 0, "base": cpu.gdt_base or 0, "limit": cpu.gdt_limit or 0, "flags": 0}
    v[IDT] = {"selector": 0, "base": cpu.idt_base or 0, "limit": cpu.idt_limit or 0, "flags": 0}
    for n, name in CR.items():
        v[name] = getattr(cpu, f"cr{n}") or 0
    long_mode = bool((cpu.cr0 or 0) & CR0_PG and (cpu.cr4 or 0) & CR4_PAE)
    v[EFER] = EFER_LONG if long_mode else 0
    v[KERNEL_GS_BASE] = cpu.kernel_gs_base or 0
    return v


def cpu_payload(cpu: CpuState) -> bytes:
    """The ``cpu`` section payload (fields only, no subsections) for ``cpu``."""
    try:
        return bytes(X86_64_CPU_STATE.build(cpu_values(cpu)))
    except (cs.ConstructError, ValueError, TypeError, OverflowError) as e:
        raise UsageError(f"cannot build the cpu section of vCPU {cpu.index}: {e}") from None


def aarch64_cpu_fields_for(cpu: CpuState) -> list[dict[str, Any]]:
    """The field list of ``cpu``'s arm section: as many ``cpreg`` entries as it has system registers."""
    return aarch64_cpu_fields(sum(1 for n in ARM64_SYSREGS if n in cpu.regs))


def aarch64_cpu_payload(cpu: CpuState) -> bytes:
    """The arm ``cpu`` section payload of an AArch64 vCPU at ``cpu.regs`` (x0..x30, sp, pc,
    pstate, and the system registers of :data:`~vmci.layouts.migration_cpu.ARM64_SYSREGS` it has)."""
    decl = vmstate_struct(aarch64_cpu_fields_for(cpu))
    v: dict[str, Any] = _zeros(decl)
    r = cpu.regs
    v[AARCH64_XREGS] = [r.get(f"x{i}", 0) for i in range(31)] + [r.get("sp", 0)]
    v[AARCH64_PC] = r.get("pc", 0)
    v[ARM_CPSR] = (r.get("pstate", 0) & 0xFFFFFFFF).to_bytes(4, "big")
    el = (r.get("pstate", 0) >> 2) & 3
    v[ARM_SP_EL] = [r.get("sp_el0", r.get("sp", 0) if el == 0 else 0), r.get("sp", 0) if el == 1 else 0, 0, 0]
    regs = sorted((arm64_sysreg_id(*ARM64_SYSREGS[n]), r[n]) for n in ARM64_SYSREGS if n in r)
    v[ARM_CPREG_LEN] = len(regs)
    v[ARM_CPREG_INDEXES] = [i for i, _ in regs]
    v[ARM_CPREG_VALUES] = [val for _, val in regs]
    try:
        return bytes(decl.build(v))
    except (cs.ConstructError, ValueError, TypeError, OverflowError) as e:
        raise UsageError(f"cannot build the cpu section of vCPU {cpu.index}: {e}") from None


def cpu_common_payload(*, halted: bool = False, interrupt_request: int = 0) -> bytes:
    return bytes(CPU_COMMON_STATE.build({"halted": int(halted), "interrupt_request": interrupt_request}))


def _device(idstr: str, payload: bytes, fields: list[dict[str, Any]], version: int, index: int) -> Device:
    return Device(idstr, payload, {"fields": fields}, version=version, instance_id=index)


def cpu_devices(cpus: Sequence[CpuState], *, arch: str = "x86_64") -> list[Device]:
    """``cpu_common`` then ``cpu`` per vCPU, as QEMU saves them, for ``write_migration(devices=...)``.

    Each section's instance id is the vCPU index, as QEMU numbers them; ``arch`` is ``x86_64`` or
    ``aarch64`` (the target's CPU state).
    """
    if arch not in ("x86_64", "aarch64"):
        raise UsageError(f"no migration cpu section for architecture {arch!r}")
    out: list[Device] = []
    for cpu in cpus:
        out.append(_device(CPU_COMMON_IDSTR, cpu_common_payload(), CPU_COMMON_FIELDS, CPU_COMMON_VERSION,
                           cpu.index))
        if arch == "aarch64":
            out.append(_device(CPU_IDSTR, aarch64_cpu_payload(cpu), aarch64_cpu_fields_for(cpu),
                               ARM_CPU_VERSION, cpu.index))
        else:
            out.append(_device(CPU_IDSTR, cpu_payload(cpu), X86_64_CPU_FIELDS, CPU_VERSION, cpu.index))
    return out


def write_migration_with_cpus(
    out: BinaryIO, memory: SparseMemory, cpus: Sequence[CpuState], *,
    devices: list[Device] | None = None, arch: str = "x86_64", **kw: Any,
) -> int:
    """:func:`~vmci.formats.migration.writer.write_migration` with ``cpus`` saved before ``devices``
    (default :func:`standard_devices`), each ``cpu``/``cpu_common`` section numbered by vCPU index."""
    if len({c.index for c in cpus}) != len(cpus):
        raise UsageError("vCPU indexes must be distinct")
    all_devices = cpu_devices(cpus, arch=arch) + (standard_devices() if devices is None else list(devices))
    return write_migration(out, memory, devices=all_devices, **kw)


__all__ = ["aarch64_cpu_fields_for", "aarch64_cpu_payload", "cpu_common_payload", "cpu_devices",
           "cpu_payload", "cpu_values", "write_migration_with_cpus"]
