"""vCPU registers from the ``cpu`` device sections of a QEMU migration stream.

Each ``cpu`` section (instance id = vCPU index) holds ``vmstate_x86_cpu``: general registers,
segments, GDTR/IDTR, control registers, then optional subsections; or, for an Arm target,
``vmstate_arm_cpu``: x0..x31 (x31 the current SP), pc, PSTATE (``cpsr``) and the system
registers by KVM register ID (``TTBR1_EL1``, ``TCR_EL1``, ``SCTLR_EL1``, ...: what QEMU's dumps
lack).  The field offsets come from
the stream's own VM description; a stream without one (``suppress-vmdesc``) is decoded only when
the section is version 12 and sized like QEMU's x86_64 layout (:mod:`vmci.layouts.migration_cpu`).
Anything else leaves the vCPU out, with a warning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import construct as cs

from vmci.core.dump import CpuState
from vmci.errors import VmciError
from vmci.formats.migration.stream import StreamIndex
from vmci.formats.source import Source
from vmci.layouts.migration import QEMU_VM_SUBSECTION
from vmci.layouts.migration_cpu import (
    AARCH64_PC,
    AARCH64_REQUIRED,
    AARCH64_XREGS,
    ARM64_SYSREGS,
    ARM_CPREG_INDEXES,
    ARM_CPREG_LEN,
    ARM_CPREG_VALUES,
    ARM_CPSR,
    ARM_POWER_STATE,
    ARM_SP_EL,
    CPU_IDSTR,
    CPU_VERSION,
    CR,
    EFLAGS,
    EIP,
    GDT,
    GPR_ORDER,
    IDT,
    KERNEL_GS_BASE,
    LDT,
    REGS,
    REQUIRED,
    SEG_ORDER,
    SEGS,
    TR,
    X86_64_CPU_STATE,
    X86_64_CPU_STATE_SIZE,
    VmstateDescriptionError,
    arm64_sysreg_id,
    vmstate_struct,
)

SOURCE = "migration cpu section"
MAX_SECTION = 1 << 20  # a cpu section is a few KiB; more means the index went wrong
_I386 = {"rax": "eax", "rcx": "ecx", "rdx": "edx", "rbx": "ebx", "rsp": "esp", "rbp": "ebp",
         "rsi": "esi", "rdi": "edi"}


class CpuSectionError(Exception):
    """Why one section gave no vCPU (becomes a warning)."""


def _descriptions(stream: StreamIndex) -> list[Mapping[str, Any]]:
    devices = (stream.vmdesc or {}).get("devices", ())
    return [d for d in devices if isinstance(d, Mapping) and d.get("name") == CPU_IDSTR] if devices else []


def _instance(desc: Mapping[str, Any]) -> int:
    value = desc.get("instance_id", 0)
    return value if isinstance(value, int) else -1


def _u32(value: Any) -> int:
    """A 4-byte field vmci parses as bytes (QEMU's ``cpsr`` type), big-endian as vmstate sends it."""
    return int.from_bytes(value, "big") if isinstance(value, bytes | bytearray) else int(value)


def aarch64_cpu_from_values(v: Mapping[str, Any], index: int, source: str = SOURCE) -> CpuState:
    """A :class:`CpuState` from the parsed fields of an Arm ``cpu`` section of an AArch64 vCPU:
    ``x0``..``x30``, ``sp``, ``pc``, ``pstate``, ``sp_el0``/``sp_el1`` and the system registers
    of :data:`~vmci.layouts.migration_cpu.ARM64_SYSREGS` (``mmu`` from ``SCTLR_EL1.M``)."""
    missing = [n for n in AARCH64_REQUIRED if n not in v]
    if missing:
        raise CpuSectionError(f"its description lacks {', '.join(missing)}")
    xregs = list(v[AARCH64_XREGS])
    if len(xregs) != 32 or not all(isinstance(x, int) for x in xregs):
        raise CpuSectionError(f"{AARCH64_XREGS} has {len(xregs)} registers, expected 32")
    regs = {f"x{i}": xregs[i] for i in range(31)}
    regs["sp"], regs["pc"], regs["pstate"] = xregs[31], int(v[AARCH64_PC]), _u32(v[ARM_CPSR])
    sp_el = v.get(ARM_SP_EL)
    if isinstance(sp_el, list) and len(sp_el) >= 2:
        regs["sp_el0"], regs["sp_el1"] = int(sp_el[0]), int(sp_el[1])
    cpregs: dict[int, int] = {}
    n = v.get(ARM_CPREG_LEN)
    idx, val = v.get(ARM_CPREG_INDEXES), v.get(ARM_CPREG_VALUES)
    if isinstance(n, int) and isinstance(idx, list) and isinstance(val, list):
        cpregs = dict(zip(idx[:max(n, 0)], val[:max(n, 0)], strict=False))
    for name, enc in ARM64_SYSREGS.items():
        value = cpregs.get(arm64_sysreg_id(*enc))
        if isinstance(value, int):
            regs[name] = value
    cpu = CpuState(index=index, regs=regs, sources=[source])
    if "sctlr_el1" in regs:
        cpu.mmu = bool(regs["sctlr_el1"] & 1)
    off = v.get(ARM_POWER_STATE)
    if isinstance(off, bytes | bytearray) and any(off):
        cpu.warnings.append("the vCPU is powered off (PSCI)")
    return cpu


def cpu_from_values(v: Mapping[str, Any], index: int, source: str = SOURCE) -> CpuState:
    """A :class:`CpuState` from the parsed fields of one ``cpu`` section (x86, or Arm when the
    fields name ``env.xregs``)."""
    if AARCH64_XREGS in v:
        return aarch64_cpu_from_values(v, index, source)
    missing = [n for n in REQUIRED if n not in v]
    if missing:
        raise CpuSectionError(f"its description lacks {', '.join(missing)}")
    gprs = list(v[REGS])
    if len(gprs) not in (8, 16):
        raise CpuSectionError(f"{REGS} has {len(gprs)} registers, expected 16 (x86_64) or 8 (i386)")
    i386 = len(gprs) == 8
    regs: dict[str, int] = {}
    for name, value in zip(GPR_ORDER, gprs, strict=False):
        regs[_I386.get(name, name) if i386 else name] = value
    regs["eip" if i386 else "rip"] = v[EIP]
    regs["eflags"] = v[EFLAGS]
    segs = list(v[SEGS])
    if len(segs) != len(SEG_ORDER):
        raise CpuSectionError(f"{SEGS} has {len(segs)} entries, expected 6")
    for name, seg in [*zip(SEG_ORDER, segs, strict=True), ("ldt", v[LDT]), ("tr", v[TR])]:
        regs[name], regs[f"{name}_base"] = seg["selector"], seg["base"]
        regs[f"{name}_limit"], regs[f"{name}_flags"] = seg["limit"], seg["flags"]
    cpu = CpuState(index=index, regs=regs, sources=[source])
    cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4 = (v[CR[n]] for n in (0, 2, 3, 4))
    cpu.gdt_base, cpu.gdt_limit = v[GDT]["base"], v[GDT]["limit"]
    cpu.idt_base, cpu.idt_limit = v[IDT]["base"], v[IDT]["limit"]
    kgs = v.get(KERNEL_GS_BASE)
    cpu.kernel_gs_base = kgs if isinstance(kgs, int) else None
    values = [*regs.values(), cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4, cpu.gdt_base, cpu.gdt_limit, cpu.idt_base,
              cpu.idt_limit]
    if not all(isinstance(x, int) for x in values):
        raise CpuSectionError("its description gives a register a non-integer type")
    return cpu


def decode_cpu_section(payload: bytes, version: int, desc: Mapping[str, Any] | None, index: int) -> CpuState:
    """Decode one ``cpu`` section payload; raises :class:`CpuSectionError` when it cannot."""
    if desc is not None:
        try:
            decl = vmstate_struct(desc.get("fields", ()))
            size = decl.sizeof()
        except (VmstateDescriptionError, cs.ConstructError) as e:
            raise CpuSectionError(f"its VM description has no fixed layout ({e})") from None
        how, source = "VM description", SOURCE
    elif version == CPU_VERSION and (len(payload) == X86_64_CPU_STATE_SIZE or (
            len(payload) > X86_64_CPU_STATE_SIZE and payload[X86_64_CPU_STATE_SIZE] == QEMU_VM_SUBSECTION)):
        decl, size, how = X86_64_CPU_STATE, X86_64_CPU_STATE_SIZE, "QEMU's x86_64 version-12 layout"
        source = f"{SOURCE} (no VM description: {how})"
    else:
        raise CpuSectionError(
            f"the stream has no VM description and the section (version {version}, {len(payload)} bytes) "
            f"is not the x86_64 version-{CPU_VERSION} layout vmci knows ({X86_64_CPU_STATE_SIZE} bytes "
            "of fields, then subsections)")
    if len(payload) < size:
        raise CpuSectionError(f"it has {len(payload)} bytes but its fields need {size} ({how})")
    if len(payload) > size and payload[size] != QEMU_VM_SUBSECTION:
        raise CpuSectionError(f"byte {size} after its fields is {payload[size]:#04x}, not a subsection "
                              f"marker ({how} does not match the data)")
    try:
        values = decl.parse(payload[:size])
    except cs.ConstructError as e:  # pragma: no cover - the size was checked
        raise CpuSectionError(f"cannot parse it: {e}") from None
    try:
        return cpu_from_values(values, index, source)
    except (KeyError, TypeError, ValueError, IndexError) as e:  # fields of unexpected shapes
        raise CpuSectionError(f"its description has a register field of another shape ({e!r})") from None


def cpus_from_stream(src: Source, stream: StreamIndex) -> tuple[list[CpuState], list[str]]:
    """``(cpus, warnings)`` from the stream's ``cpu`` sections, ordered by vCPU index."""
    sections = [s for s in stream.sections if s.idstr == CPU_IDSTR]
    if not sections:
        return [], []
    warnings: list[str] = []
    descs = _descriptions(stream)
    by_instance = {_instance(d): d for d in descs}
    ids = [s.instance_id for s in sections]
    repeated = len(set(ids)) != len(ids)
    if repeated:
        dup = sorted(i for i, n in Counter(ids).items() if n > 1)
        warnings.append(f"cpu sections repeat instance id(s) {dup}; vCPUs are numbered in stream order")
    cpus: list[CpuState] = []
    for k, sec in enumerate(sections):
        index = k if repeated else ids[k]
        if stream.vmdesc is None:
            desc = None
        elif repeated or len(by_instance) != len(descs):
            desc = descs[k] if k < len(descs) else None
        else:
            desc = by_instance.get(ids[k])
        if stream.vmdesc is not None and desc is None:
            warnings.append(f"cpu section {index} at offset {sec.offset:#x} has no VM description entry")
            continue
        try:
            if not 0 <= sec.size <= MAX_SECTION:
                raise CpuSectionError(f"it is {sec.size} bytes long")
            payload = src.read(sec.payload_offset, sec.size)
            cpus.append(decode_cpu_section(payload, sec.version_id, desc, index))
        except (CpuSectionError, VmciError) as e:
            warnings.append(f"cpu section {index} at offset {sec.offset:#x} gives no registers: {e}")
    cpus.sort(key=lambda c: c.index)
    return cpus, warnings
