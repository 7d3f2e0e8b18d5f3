"""arm64 and 32-bit arm CPU notes at the offsets QEMU writes them (target/arm/arch_dump.c: pr_pid at
32, x0 at 112, sp at 360, pc at 368, pstate at 376 in a 392-byte descriptor; r0 at 72 and cpsr at
136 in a 148-byte one), in both byte orders, and what a dump of each reads as."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from vmci import arch
from vmci.arch.aarch64.cpu import cpus_from_notes, exception_level, mmu_on, parse_prstatus, prstatus_desc
from vmci.core.dump import CpuState, Note
from vmci.core.memory import Range, SparseMemory
from vmci.errors import FormatError
from vmci.formats import open_dump
from vmci.formats.elf import write_elf
from vmci.formats.notes import encode_notes
from vmci.layouts.elf import EM_AARCH64, EM_ARM

KERNEL_PC = 0xFFFFBD16104DA26C  # an idle vCPU of a real Debian 6.1 guest (EL1h, pstate 0x400000c5)


def _desc(order: str, pid: int, regs: dict[int, int]) -> bytes:
    out = bytearray(392)
    fmt = "<" if order == "little" else ">"
    struct.pack_into(f"{fmt}I", out, 32, pid)
    for off, v in regs.items():
        struct.pack_into(f"{fmt}Q", out, off, v)
    struct.pack_into(f"{fmt}I", out, 384, 1)
    return bytes(out)


@pytest.mark.parametrize("order", ["little", "big"])
def test_prstatus_offsets_both_ways(order: str) -> None:
    stack = 0xFFFF8000080C3DE0
    raw = _desc(order, 2, {112: 0x11, 112 + 8 * 29: stack, 360: stack, 368: KERNEL_PC, 376: 0x400000C5})
    pid, regs = parse_prstatus(raw, order=order)
    assert pid == 2 and regs["x0"] == 0x11 and regs["x29"] == regs["sp"] == 0xFFFF8000080C3DE0
    assert (regs["pc"], regs["pstate"]) == (KERNEL_PC, 0x400000C5)
    cpu = CpuState(index=1, pid=2, regs=regs)
    assert prstatus_desc(cpu, order=order) == raw  # QEMU's bytes, pr_fpvalid 1 included


def test_exception_level_and_translation() -> None:
    assert exception_level(0x400000C5) == 1 and exception_level(0) == 0 and exception_level(0x10) is None
    assert mmu_on(KERNEL_PC, 0x3C5) is True and mmu_on(0x404990, 0) is True
    assert mmu_on(0x40200000, 0x3C5) is False  # EL1 at a physical address: before the MMU is on
    assert mmu_on(0, 0x3C9) is None  # EL2


def test_notes_become_cpus_and_bad_sizes_are_format_errors() -> None:
    notes = [Note("CORE", 1, _desc("little", 1, {368: 0x404990})), Note("CORE", 2, bytes(528)),
             Note("CORE", 1, _desc("little", 2, {368: KERNEL_PC, 376: 0x3C5}))]
    cpus = cpus_from_notes(notes)
    want = [(0, 1, 0x404990, True), (1, 2, KERNEL_PC, True)]
    assert [(c.index, c.pid, c.regs["pc"], c.mmu) for c in cpus] == want
    assert cpus[1].paging  # CpuState.paging follows mmu when control registers are absent
    with pytest.raises(FormatError, match="392"):
        cpus_from_notes([Note("CORE", 1, bytes(336))])  # an x86_64 layout in an arm64 dump


def _elf(path: Path, machine: int, notes: bytes, *, bits: int = 64, little: bool = True) -> Path:
    mem = SparseMemory([Range(0x40000000, 1 << 20)])
    with path.open("wb") as f:
        write_elf(f, mem, notes, machine=machine, bits=bits, little=little)
    return path


def test_a_big_endian_arm64_dump(tmp_path: Path) -> None:
    notes = encode_notes([("CORE", 1, _desc("big", 1, {368: KERNEL_PC, 376: 0x3C5}))], "big")
    with open_dump(_elf(tmp_path / "be.elf", EM_AARCH64, notes, little=False)) as d:
        assert (d.arch, d.byte_order, d.warnings) == ("aarch64", "big", [])
        assert [c.regs["pc"] for c in d.cpus] == [KERNEL_PC]


def test_a_32_bit_arm_dump_reads_its_registers(tmp_path: Path) -> None:
    desc = bytearray(148)
    struct.pack_into("<I", desc, 24, 1)
    struct.pack_into("<18I", desc, 72, *range(16), 0x600001D3, 0)  # r0..r15, cpsr (SVC), ORIG_r0
    notes = encode_notes([("CORE", 1, bytes(desc))])
    with open_dump(_elf(tmp_path / "arm.elf", EM_ARM, notes, bits=32)) as d:
        assert d.arch == "arm" and not d.warnings
        assert d.cpus[0].regs["r15"] == 15 and d.cpus[0].regs["cpsr"] == 0x600001D3
    assert not arch.get("arm").translates and not arch.get("arm").finds_kaslr
