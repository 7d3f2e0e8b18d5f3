"""CPU notes: elf_prstatus and QEMUCPUState built from a CpuState parse back to it."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmci.arch.x86_64.cpu import (
    cpus_from_notes,
    parse_prstatus,
    parse_qemu_cpu,
    prstatus_desc,
    qemu_cpu_desc,
)
from vmci.core.dump import CpuState, Note
from vmci.errors import FormatError, TruncatedError, UsageError
from vmci.layouts.prstatus import I386_USER_REGS, X86_64_USER_REGS

SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr")
SELECTORS = {"cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr"}
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)


def reg_strategy(machine: str) -> st.SearchStrategy[dict[str, int]]:
    names = X86_64_USER_REGS if machine == "x86_64" else I386_USER_REGS
    word = u64 if machine == "x86_64" else u32
    fields: dict[str, st.SearchStrategy[int]] = {n: (u16 if n in SELECTORS else word) for n in names}
    for s in SEGS:
        fields[s] = u16
        fields[f"{s}_base"] = u64
        fields[f"{s}_limit"] = u32
        fields[f"{s}_flags"] = u32
    return st.fixed_dictionaries(fields)


@st.composite
def cpu_states(draw: st.DrawFn, machine: str, size: int, index: int) -> CpuState:
    return CpuState(
        index=index, pid=draw(u32), regs=draw(reg_strategy(machine)),
        cr0=draw(u64), cr1=draw(u64), cr2=draw(u64), cr3=draw(u64), cr4=draw(u64),
        gdt_base=draw(u64), gdt_limit=draw(u32), idt_base=draw(u64), idt_limit=draw(u32),
        kernel_gs_base=draw(u64) if size >= 440 else None,
        qemu_version=draw(st.integers(1, 3)),
        crash_occurred=draw(st.booleans()) if size >= 448 else None,
        sources=["NT_PRSTATUS", f"QEMUCPUState(size={size})"],
    )


def notes_for(cpus: list[CpuState], machine: str, size: int) -> list[Note]:
    # QEMU's order: every CORE note, then every QEMU note
    return ([Note("CORE", 1, prstatus_desc(c, machine)) for c in cpus]
            + [Note("QEMU", 0, qemu_cpu_desc(c, machine, size)) for c in cpus])


@pytest.mark.parametrize("machine", ["x86_64", "i386"])
@pytest.mark.parametrize("size", [432, 440, 448])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_round_trip(machine: str, size: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 3))
    cpus = [data.draw(cpu_states(machine, size, i)) for i in range(n)]
    parsed = cpus_from_notes(notes_for(cpus, machine, size), machine)
    assert parsed == cpus


def test_layout_offsets() -> None:
    cpu = CpuState(index=0, regs={"rip": 0x1111, "eflags": 0x246}, cr3=0x3333, cr4=0x4444,
                   gdt_base=0x5555, idt_base=0x6666, kernel_gs_base=0x7777)
    q = qemu_cpu_desc(cpu, "x86_64", 440)
    assert len(q) == 440
    assert struct.unpack_from("<II", q, 0) == (1, 440)
    for off, want in ((136, 0x1111), (144, 0x246), (360, 0x5555), (384, 0x6666), (416, 0x3333),
                      (424, 0x4444), (432, 0x7777)):
        assert struct.unpack_from("<Q", q, off)[0] == want, off
    p = prstatus_desc(cpu, "x86_64")
    assert len(p) == 336
    assert struct.unpack_from("<I", p, 32)[0] == 1  # pid defaults to index + 1, as QEMU writes
    assert struct.unpack_from("<Q", p, 112 + 16 * 8)[0] == 0x1111  # rip is the 17th register
    i = prstatus_desc(CpuState(index=3, regs={"eip": 0xC0DE, "gs": 0x33}), "i386")
    assert len(i) == 144
    assert struct.unpack_from("<I", i, 24)[0] == 4
    assert struct.unpack_from("<I", i, 72 + 12 * 4)[0] == 0xC0DE
    assert struct.unpack_from("<HH", i, 72 + 10 * 4) == (0x33, 0)


def test_missing_kinds_and_unpaired() -> None:
    cpus = [CpuState(index=i, regs={"rip": 0x100 + i}, cr3=0x1000 * (i + 1)) for i in range(2)]
    only_q = cpus_from_notes([Note("QEMU", 0, qemu_cpu_desc(c, "x86_64")) for c in cpus], "x86_64")
    assert [c.cr3 for c in only_q] == [0x1000, 0x2000]
    assert [c.pid for c in only_q] == [None, None]
    assert "orig_rax" not in only_q[0].regs
    only_p = cpus_from_notes([Note("CORE", 1, prstatus_desc(c, "x86_64")) for c in cpus], "x86_64")
    assert [c.regs["rip"] for c in only_p] == [0x100, 0x101]
    assert [c.cr3 for c in only_p] == [None, None]
    assert only_p[1].sources == ["NT_PRSTATUS"]
    mixed = cpus_from_notes([Note("CORE", 1, prstatus_desc(cpus[0], "x86_64")),
                             *[Note("QEMU", 0, qemu_cpu_desc(c, "x86_64")) for c in cpus],
                             Note("VMCOREINFO", 0, b"OSRELEASE=x\n")], "x86_64")
    assert len(mixed) == 2 and mixed[1].pid is None
    assert any("1 NT_PRSTATUS notes but 2 QEMU notes" in w for w in mixed[0].warnings)
    assert cpus_from_notes([], "x86_64") == []


def test_conflicting_values_warn() -> None:
    a = CpuState(index=0, regs={"rip": 1})
    b = CpuState(index=0, regs={"rip": 2})
    (cpu,) = cpus_from_notes([Note("CORE", 1, prstatus_desc(a, "x86_64")),
                              Note("QEMU", 0, qemu_cpu_desc(b, "x86_64"))], "x86_64")
    assert cpu.regs["rip"] == 1
    assert any(w.startswith("rip:") for w in cpu.warnings)


def test_i386_r8_to_r15_kept_only_when_set() -> None:
    cpu = CpuState(index=0, regs={"eax": 7, "r9": 9})
    parsed = parse_qemu_cpu(qemu_cpu_desc(cpu, "i386", 432), "i386")
    assert parsed.regs["eax"] == 7 and parsed.regs["r9"] == 9 and "r8" not in parsed.regs
    assert "rax" not in parsed.regs


def test_big_endian_qemu_note() -> None:
    cpu = CpuState(index=0, regs={"rip": 0xFFFFFFFF81000000}, cr3=0x1234000)
    desc = qemu_cpu_desc(cpu, "x86_64", 440, order="big")
    parsed = parse_qemu_cpu(desc, "x86_64")
    assert parsed.regs["rip"] == 0xFFFFFFFF81000000 and parsed.cr3 == 0x1234000
    assert any("big-endian" in w for w in parsed.warnings)
    both = cpus_from_notes([Note("CORE", 1, prstatus_desc(cpu, "x86_64", order="big")),
                            Note("QEMU", 0, desc)], "x86_64")
    assert both[0].regs["rip"] == 0xFFFFFFFF81000000 and both[0].pid == 1


@pytest.mark.parametrize("size", [0, 8, 436, 4096])
def test_unknown_qemu_size(size: int) -> None:
    desc = bytearray(qemu_cpu_desc(CpuState(index=0), "x86_64", 440))
    struct.pack_into("<I", desc, 4, size)
    with pytest.raises(FormatError) as ei:
        cpus_from_notes([Note("QEMU", 0, bytes(desc), offset=0x100)], "x86_64")
    assert ei.value.field == "QEMUCPUState.size"
    assert ei.value.offset == 0x100 + 12 + 8 + 4


def test_qemu_truncated_and_version() -> None:
    good = qemu_cpu_desc(CpuState(index=0), "x86_64", 448)
    with pytest.raises(TruncatedError) as ei:
        parse_qemu_cpu(good[:440], "x86_64")
    assert ei.value.field == "QEMUCPUState.size"
    with pytest.raises(TruncatedError):
        parse_qemu_cpu(good[:6], "x86_64")
    with pytest.raises(FormatError) as ei2:
        parse_qemu_cpu(b"\0\0\0\0" + good[4:], "x86_64")
    assert ei2.value.field == "QEMUCPUState.version"


@pytest.mark.parametrize(("machine", "size"), [("x86_64", 335), ("x86_64", 340), ("i386", 148), ("i386", 0)])
def test_wrong_prstatus_size(machine: str, size: int) -> None:
    with pytest.raises(FormatError) as ei:
        cpus_from_notes([Note("CORE", 1, bytes(size), offset=0)], machine)
    assert ei.value.field == "elf_prstatus.size"
    assert ei.value.offset == 20
    with pytest.raises(FormatError):
        parse_prstatus(bytes(144 if machine == "x86_64" else 336), machine)


def test_i386_prstatus_in_a_64_bit_dump() -> None:
    # QEMU: ELFCLASS64 + EM_386 (e.g. a guest still in real mode) carries the 144-byte prstatus
    cpu = CpuState(index=0, regs={"eip": 0xFFF0, "cs": 0xF000}, cr0=0x60000010)
    notes = [Note("CORE", 1, prstatus_desc(cpu, "i386")), Note("QEMU", 0, qemu_cpu_desc(cpu, "i386"))]
    (got,) = cpus_from_notes(notes, "x86_64")
    assert got.regs["eip"] == 0xFFF0 and "rip" not in got.regs and got.cr0 == 0x60000010
    assert any("i386 layout" in w for w in got.warnings)


def test_bad_values_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        prstatus_desc(CpuState(index=0, regs={"rip": 1 << 64}), "x86_64")
    with pytest.raises(UsageError):
        prstatus_desc(CpuState(index=0, regs={"cs": 0x10000}), "i386")
    with pytest.raises(UsageError):
        qemu_cpu_desc(CpuState(index=0), "x86_64", 436)
    with pytest.raises(UsageError):
        cpus_from_notes([], "arm64")


def test_to_dict_is_json() -> None:
    cpu = cpus_from_notes(notes_for([CpuState(index=0, regs={"rip": 5}, cr0=0x80000011)], "x86_64", 448),
                          "x86_64")[0]
    d = json.loads(json.dumps(cpu.to_dict()))
    assert d["regs"]["rip"] == 5 and d["cr0"] == 0x80000011 and d["crash_occurred"] is False
    assert cpu.paging is False  # CR3 is 0
