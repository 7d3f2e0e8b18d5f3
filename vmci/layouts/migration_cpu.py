"""The x86 vCPU state in a QEMU migration stream: the ``cpu`` and ``cpu_common`` device sections.

A device section's fields are described in the stream's JSON VM description (``fields`` with
``name``, ``type``, ``size``, ``array_len``, nested ``struct`` / ``tmp`` descriptions), in the
same form QEMU writes there.  :func:`vmstate_struct` turns such a field list into a big-endian
construct declaration (vmstate integers travel big-endian).  The field lists below are
``vmstate_x86_cpu`` version 12 of an x86_64 QEMU target as QEMU 7.2 describes it (checked
against a real 7.2.22 stream); they are the one source for the stream writer, its VM
description, and the reader of streams written without a description (``suppress-vmdesc``).
Subsections follow the fields (``0x05``, name, version, fields) and are not part of the
declaration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import construct as cs

CPU_IDSTR = "cpu"
CPU_COMMON_IDSTR = "cpu_common"
CPU_VERSION = 12  # vmstate_x86_cpu.version_id since QEMU 2.x (ymmh registers)
CPU_COMMON_VERSION = 1

# names of the fields vmci reads
REGS = "env.regs"
EIP = "env.eip"
EFLAGS = "env.eflags"
SEGS = "env.segs"
LDT = "env.ldt"
TR = "env.tr"
GDT = "env.gdt"
IDT = "env.idt"
CR = {0: "env.cr[0]", 2: "env.cr[2]", 3: "env.cr[3]", 4: "env.cr[4]"}
EFER = "env.efer"
KERNEL_GS_BASE = "env.kernelgsbase"
REQUIRED = (REGS, EIP, EFLAGS, SEGS, LDT, TR, GDT, IDT, *CR.values())
# QEMU's register numbering (R_EAX..R_EDI, then r8..r15) and segment numbering (R_ES..R_GS)
GPR_ORDER = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
SEG_ORDER = ("es", "cs", "ss", "ds", "fs", "gs")


def _int(name: str, size: int, n: int | None = None, signed: bool = False) -> dict[str, Any]:
    f: dict[str, Any] = {"name": name}
    if n is not None:
        f["array_len"] = n
    f.update(type=f"{'int' if signed else 'uint'}{size * 8}", size=size)
    return f


def _struct(name: str, desc: dict[str, Any], size: int, n: int | None = None) -> dict[str, Any]:
    f: dict[str, Any] = {"name": name}
    if n is not None:
        f["array_len"] = n
    f.update(type="struct", struct=desc, size=size)
    return f


def _u64s(*names: str) -> list[dict[str, Any]]:
    return [_int(n, 8) for n in names]


_SEGMENT = {"vmsd_name": "segment", "version": 1,
            "fields": [_int("selector", 4), _int("base", 8), _int("limit", 4), _int("flags", 4)]}
_FPREG = {"vmsd_name": "fpreg", "version": 0, "fields": [
    {"name": "tmp", "type": "tmp", "vmsd_name": "fpreg_tmp", "version": 0,
     "fields": [_int("tmp_mant", 8), _int("tmp_exp", 2)], "size": 10}]}


def _pair(vmsd: str, lo: int) -> dict[str, Any]:
    return {"vmsd_name": vmsd, "version": 1,
            "fields": [_int(f"_q_ZMMReg[{lo}]", 8), _int(f"_q_ZMMReg[{lo + 1}]", 8)]}


X86_64_CPU_FIELDS: list[dict[str, Any]] = [
    _int(REGS, 8, 16), *_u64s(EIP, EFLAGS), _int("env.hflags", 4),
    _int("env.fpuc", 2), _int("env.fpus_vmstate", 2), _int("env.fptag_vmstate", 2),
    _int("env.fpregs_format_vmstate", 2),
    _struct("env.fpregs", _FPREG, 10, 8),
    _struct(SEGS, _SEGMENT, 20, 6), _struct(LDT, _SEGMENT, 20), _struct(TR, _SEGMENT, 20),
    _struct(GDT, _SEGMENT, 20), _struct(IDT, _SEGMENT, 20),
    _int("env.sysenter_cs", 4), *_u64s("env.sysenter_esp", "env.sysenter_eip"),
    *_u64s(*CR.values()), _int("env.dr", 8, 8),
    _int("env.a20_mask", 4, signed=True), _int("env.mxcsr", 4),
    _struct("env.xmm_regs[0]", _pair("xmm_reg", 0), 16, 16),
    *_u64s(EFER, "env.star", "env.lstar", "env.cstar", "env.fmask", KERNEL_GS_BASE),
    _int("env.smbase", 4), _int("env.pat", 8), _int("env.hflags2", 4),
    *_u64s("env.vm_hsave", "env.vm_vmcb", "env.tsc_offset", "env.intercept"),
    *[_int(f"env.intercept_{n}", 2) for n in ("cr_read", "cr_write", "dr_read", "dr_write")],
    _int("env.intercept_exceptions", 4), _int("env.v_tpr", 1),
    _int("env.mtrr_fixed", 8, 11), _int("env.mtrr_deftype", 8),
    _struct("env.mtrr_var", {"vmsd_name": "mtrr_var", "version": 1,
                             "fields": _u64s("base", "mask")}, 16, 8),
    _int("env.interrupt_injected", 4, signed=True), _int("env.mp_state", 4), _int("env.tsc", 8),
    _int("env.exception_nr", 4, signed=True),
    *[_int(f"env.{n}", 1) for n in ("soft_interrupt", "nmi_injected", "nmi_pending", "has_error_code")],
    _int("env.sipi_vector", 4), *_u64s("env.mcg_cap", "env.mcg_status", "env.mcg_ctl"),
    _int("env.mce_banks", 8, 40),
    *_u64s("env.tsc_aux", "env.system_time_msr", "env.wall_clock_msr", "env.xcr0", "env.xstate_bv"),
    _struct("env.xmm_regs[1]", _pair("ymmh_reg", 2), 16, 16),
]

CPU_COMMON_FIELDS: list[dict[str, Any]] = [_int("halted", 4), _int("interrupt_request", 4)]


class VmstateDescriptionError(ValueError):
    """A field description that cannot be turned into a fixed layout."""


def _field(f: Mapping[str, Any]) -> cs.Construct:
    kind = str(f.get("type", ""))
    size = f.get("size")
    if kind == "struct":
        desc = f.get("struct")
        if not isinstance(desc, Mapping):
            raise VmstateDescriptionError(f"struct field {f.get('name')!r} has no description")
        if desc.get("subsections"):  # optional parts: no fixed layout
            raise VmstateDescriptionError(f"struct field {f.get('name')!r} has subsections")
        elem = vmstate_struct(desc.get("fields", ()))
    elif kind == "tmp" and "fields" in f:
        elem = vmstate_struct(f["fields"])
    elif not isinstance(size, int) or size < 0:
        raise VmstateDescriptionError(f"field {f.get('name')!r} ({kind}) has no fixed size")
    elif kind.startswith(("int", "uint")) and size in (1, 2, 4, 8):
        elem = cs.BytesInteger(size, signed=kind.startswith("int"))
    else:  # buffers, unused space, types vmci has no use for
        elem = cs.Bytes(size)
    if isinstance(size, int) and elem.sizeof() != size:
        raise VmstateDescriptionError(f"field {f.get('name')!r} says {size} bytes, its parts {elem.sizeof()}")
    n = f.get("array_len")
    if n is not None:
        if not isinstance(n, int) or not 0 <= n <= 1 << 16:
            raise VmstateDescriptionError(f"field {f.get('name')!r} has array_len {n!r}")
        return cs.Array(n, elem)
    return elem


def vmstate_struct(fields: Sequence[Mapping[str, Any]]) -> cs.Struct:
    """The big-endian declaration of a VM-description field list (subsections excluded).

    Raises :class:`VmstateDescriptionError` for fields without a fixed size.
    """
    if not isinstance(fields, Sequence):
        raise VmstateDescriptionError("the field list is not a list")
    subcons = []
    for f in fields:
        if not isinstance(f, Mapping):
            raise VmstateDescriptionError(f"field entry {f!r} is not an object")
        name = f.get("name")
        sub = _field(f)
        subcons.append(str(name) / sub if name else sub)
    return cs.Struct(*subcons)


X86_64_CPU_STATE = vmstate_struct(X86_64_CPU_FIELDS)
X86_64_CPU_STATE_SIZE = X86_64_CPU_STATE.sizeof()
CPU_COMMON_STATE = vmstate_struct(CPU_COMMON_FIELDS)


# -- Arm: ``vmstate_arm_cpu`` (QEMU target/arm/machine.c) -------------------------------------------
# Version 22 as QEMU 7.2 describes it for an AArch64 CPU (checked against a real 7.2.22 ``virt``
# stream of a cortex-a57).  ``env.xregs[31]`` is the current SP; ``cpsr`` holds PSTATE for a CPU in
# AArch64 state (``get_cpsr``/``put_cpsr``); the system registers travel in the
# ``cpreg_vmstate_indexes``/``_values`` arrays keyed by KVM register IDs (``cpreg_to_kvm_id``).
ARM_CPU_VERSION = 22
AARCH64_XREGS = "env.xregs"
AARCH64_PC = "env.pc"
ARM_CPSR = "cpsr"
ARM_SP_EL = "env.sp_el"
ARM_ELR_EL = "env.elr_el"
ARM_CPREG_LEN = "cpreg_vmstate_array_len"
ARM_CPREG_INDEXES = "cpreg_vmstate_indexes"
ARM_CPREG_VALUES = "cpreg_vmstate_values"
ARM_POWER_STATE = "power_state"
AARCH64_REQUIRED = (AARCH64_XREGS, AARCH64_PC, ARM_CPSR)
#: KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG (Linux arch/arm64/include/uapi/asm/kvm.h)
ARM64_SYSREG_BASE = 0x6030_0000_0013_0000
#: the system registers vmci reads: name -> (op0, op1, CRn, CRm, op2) (Arm ARM, D19)
ARM64_SYSREGS = {
    "sctlr_el1": (3, 0, 1, 0, 0),
    "ttbr0_el1": (3, 0, 2, 0, 0),
    "ttbr1_el1": (3, 0, 2, 0, 1),
    "tcr_el1": (3, 0, 2, 0, 2),
    "esr_el1": (3, 0, 5, 2, 0),
    "far_el1": (3, 0, 6, 0, 0),
    "mair_el1": (3, 0, 10, 2, 0),
    "vbar_el1": (3, 0, 12, 0, 0),
    "contextidr_el1": (3, 0, 13, 0, 1),
    "tpidr_el1": (3, 0, 13, 0, 4),
}


def arm64_sysreg_id(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """The KVM register ID QEMU keys an AArch64 system register by in ``cpreg_vmstate_indexes``."""
    return ARM64_SYSREG_BASE | op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2


def aarch64_cpu_fields(cpregs: int) -> list[dict[str, Any]]:
    """``vmstate_arm_cpu``'s fields as QEMU 7.2 describes them, with ``cpregs`` system registers."""
    return [
        _int("env.regs", 4, 16), _int(AARCH64_XREGS, 8, 32), _int(AARCH64_PC, 8),
        {"name": ARM_CPSR, "type": "cpsr", "size": 4}, _int("env.spsr", 4),
        _int("env.banked_spsr", 8, 8), _int("env.banked_r13", 4, 8), _int("env.banked_r14", 4, 8),
        _int("env.usr_regs", 4, 5), _int("env.fiq_regs", 4, 5), _int(ARM_ELR_EL, 8, 4), _int(ARM_SP_EL, 8, 4),
        {"name": ARM_CPREG_LEN, "type": "int32 le", "size": 4},
        _int(ARM_CPREG_INDEXES, 8, cpregs), _int(ARM_CPREG_VALUES, 8, cpregs),
        *_u64s("env.exclusive_addr", "env.exclusive_val", "env.exclusive_high"),
        {"name": "unused", "type": "unused_buffer", "size": 8},
        _int("env.exception.syndrome", 4), _int("env.exception.fsr", 4), _int("env.exception.vaddress", 8),
        {"name": "gt_timer[0]", "type": "timer", "size": 8},
        {"name": "gt_timer[1]", "type": "timer", "size": 8},
        {"name": ARM_POWER_STATE, "type": "powered_off", "size": 1},
    ]
