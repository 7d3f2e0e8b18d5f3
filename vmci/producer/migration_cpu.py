"""The ``cpu`` and ``cpu_common`` device sections of a migration stream, from :class:`CpuState`.

The payload and its VM-description entry both come from the field list in
:mod:`vmci.layouts.migration_cpu` (``vmstate_x86_cpu`` version 12, x86_64 target, no
subsections).  Registers a :class:`CpuState` does not carry get the values a running Linux
guest under QEMU would show (FPU control word, MXCSR, PAT, EFER from the paging mode).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import fields as dataclass_fields
from typing import Any, BinaryIO

import construct as cs

from ..cpu import CpuState
from ..errors import UsageError
from ..formats.migration import index_stream
from ..layouts.migration_cpu import (
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
)
from ..memory import SparseMemory
from .migration import Device, standard_devices, write_migration

CR0_PG = 1 << 31
CR4_PAE = 1 << 5
EFER_LONG = 0xD01  # SCE | LME | LMA | NXE: what a 64-bit Linux kernel runs with
_DEFAULTS = {"env.fpuc": 0x37F, "env.mxcsr": 0x1F80, "env.a20_mask": -1, "env.pat": 0x0007040600070406,
             "env.mp_state": 0, "env.exception_nr": -1, "env.smbase": 0x30000}
_HAS_INSTANCE = "instance_id" in {f.name for f in dataclass_fields(Device)}


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


def cpu_common_payload(*, halted: bool = False, interrupt_request: int = 0) -> bytes:
    return bytes(CPU_COMMON_STATE.build({"halted": int(halted), "interrupt_request": interrupt_request}))


def _device(idstr: str, payload: bytes, fields: list[dict[str, Any]], version: int, index: int) -> Device:
    desc = {"instance_id": index, "fields": fields}
    if _HAS_INSTANCE:  # pragma: no cover - once Device carries the section's instance id
        return Device(idstr, payload, desc, version=version, instance_id=index)  # type: ignore[call-arg]
    return Device(idstr, payload, desc, version=version)


def cpu_devices(cpus: Sequence[CpuState]) -> list[Device]:
    """``cpu_common`` then ``cpu`` per vCPU, as QEMU saves them, for ``write_migration(devices=...)``.

    The VM-description entries carry ``instance_id = cpu.index``; the section headers do only if
    :class:`~vmci.producer.migration.Device` has an ``instance_id`` (else use
    :func:`write_migration_with_cpus`, which sets them).
    """
    out: list[Device] = []
    for cpu in cpus:
        out.append(_device(CPU_COMMON_IDSTR, cpu_common_payload(), CPU_COMMON_FIELDS, CPU_COMMON_VERSION,
                           cpu.index))
        out.append(_device(CPU_IDSTR, cpu_payload(cpu), X86_64_CPU_FIELDS, CPU_VERSION, cpu.index))
    return out


class _BytesSource:
    """Just enough of :class:`vmci.formats.source.Source` over a bytes buffer."""

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = memoryview(data)
        self.size = len(data)

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self.data[offset : offset + n])

    def view(self, offset: int, n: int) -> memoryview:
        return self.data[offset : offset + n]

    def release(self, offset: int, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def set_instance_ids(stream: bytearray, ids: dict[str, list[int]]) -> None:
    """Give the n-th FULL section named ``idstr`` the instance id ``ids[idstr][n]``, in place."""
    seen: dict[str, int] = {}
    for sec in index_stream(_BytesSource(stream)).sections:
        name = sec["idstr"]
        if name not in ids:
            continue
        n = seen[name] = seen.get(name, -1) + 1
        if n >= len(ids[name]):
            raise UsageError(f"the stream has more {name!r} sections than instance ids given")
        at = sec["offset"] + 6 + len(name.encode("latin-1"))
        stream[at : at + 4] = ids[name][n].to_bytes(4, "big")


def write_migration_with_cpus(
    out: BinaryIO, memory: SparseMemory, cpus: Sequence[CpuState], *,
    devices: list[Device] | None = None, **kw: Any,
) -> int:
    """:func:`~vmci.producer.migration.write_migration` with ``cpus`` saved before ``devices``
    (default :func:`standard_devices`), each ``cpu``/``cpu_common`` section numbered by vCPU index.

    The stream is assembled in memory first (the section headers are numbered afterwards).
    """
    if len({c.index for c in cpus}) != len(cpus):
        raise UsageError("vCPU indexes must be distinct")
    all_devices = cpu_devices(cpus) + (standard_devices() if devices is None else list(devices))
    buf = io.BytesIO()
    write_migration(buf, memory, devices=all_devices, **kw)
    data = bytearray(buf.getbuffer())
    del buf
    if not _HAS_INSTANCE and cpus:
        order = [c.index for c in cpus]
        set_instance_ids(data, {CPU_IDSTR: order, CPU_COMMON_IDSTR: order})
    out.write(data)
    return len(data)


__all__ = ["cpu_common_payload", "cpu_devices", "cpu_payload", "cpu_values", "set_instance_ids",
           "write_migration_with_cpus"]
