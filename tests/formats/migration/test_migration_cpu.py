"""vCPU state in migration streams: CpuState -> cpu sections -> Dump.cpus, KASLR of a generated guest
from its saved state, streams without a VM description, and malformed cpu sections."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmci.analysis.kaslr import kaslr_for_dump
from vmci.arch.x86_64.kaslr import kaslr_from_page_tables
from vmci.core.dump import CpuState
from vmci.core.memory import Range, SparseMemory
from vmci.formats import open_dump
from vmci.formats.migration.cpu import CpuSectionError, decode_cpu_section
from vmci.formats.migration.cpu_writer import cpu_devices, cpu_payload, cpu_values, write_migration_with_cpus
from vmci.formats.migration.writer import Device, standard_devices, write_migration
from vmci.layouts.migration import QEMU_VM_SUBSECTION, SubsectionHeader
from vmci.layouts.migration_cpu import (
    CPU_VERSION,
    X86_64_CPU_FIELDS,
    X86_64_CPU_STATE_SIZE,
    VmstateDescriptionError,
    vmstate_struct,
)
from vmci.producer.scenario import Scenario, build

MIB = 1 << 20
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "eflags")
SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr")
CPU_DESC = {"fields": X86_64_CPU_FIELDS}

u64 = st.integers(0, (1 << 64) - 1)
u32 = st.integers(0, (1 << 32) - 1)


@st.composite
def cpu_states(draw: Any, index: int = 0) -> CpuState:
    regs = {n: draw(u64) for n in GPRS}
    for s in SEGS:
        regs[s], regs[f"{s}_base"] = draw(st.integers(0, 0xFFFF)), draw(u64)
        regs[f"{s}_limit"], regs[f"{s}_flags"] = draw(u32), draw(u32)
    return CpuState(index=index, regs=regs, cr0=draw(u64), cr2=draw(u64), cr3=draw(u64), cr4=draw(u64),
                    gdt_base=draw(u64), gdt_limit=draw(u32), idt_base=draw(u64), idt_limit=draw(u32),
                    kernel_gs_base=draw(u64))


def same_cpu(got: CpuState, want: CpuState) -> None:
    assert got.index == want.index
    assert {k: v for k, v in got.regs.items()} == {k: want.regs.get(k, 0) for k in got.regs}
    assert set(got.regs) == set(GPRS) | {f"{s}{x}" for s in SEGS for x in ("", "_base", "_limit", "_flags")}
    for name in ("cr0", "cr2", "cr3", "cr4", "gdt_base", "gdt_limit", "idt_base", "idt_limit"):
        assert getattr(got, name) == (getattr(want, name) or 0), name
    assert got.kernel_gs_base == (want.kernel_gs_base or 0)
    assert got.cr1 is None  # QEMU does not save CR1


def small_ram(size: int = 2 * MIB) -> SparseMemory:
    mem = SparseMemory([Range(0, size)])
    mem.write(0x1000, b"guest page")
    return mem


def write(tmp: Path, name: str, **kw: Any) -> Path:
    path = tmp / name
    with path.open("wb") as f:
        if "cpus" in kw:
            write_migration_with_cpus(f, kw.pop("memory", small_ram()), kw.pop("cpus"), **kw)
        else:
            write_migration(f, kw.pop("memory", small_ram()), **kw)
    return path


# -- the declaration --------------------------------------------------------------------------------


def test_declared_layout_size_and_offsets() -> None:
    decl = vmstate_struct(X86_64_CPU_FIELDS)
    assert decl.sizeof() == X86_64_CPU_STATE_SIZE == 1817  # measured on a QEMU 7.2.22 stream
    cpu = CpuState(index=0, regs={"rax": 0x1111, "rcx": 0x2222, "rip": 0xFFFFFFFF81000000}, cr3=0xABC000)
    raw = cpu_payload(cpu)
    # QEMU's order: rax, rcx, rdx, rbx ...; 16 registers then rip, big-endian
    assert raw[0:8] == (0x1111).to_bytes(8, "big") and raw[8:16] == (0x2222).to_bytes(8, "big")
    assert raw[128:136] == (0xFFFFFFFF81000000).to_bytes(8, "big")
    # cr3 after regs(128) eip eflags(16) hflags(4) fpu(8) fpregs(80) segs(120) ldt tr gdt idt(80)
    # sysenter(20) cr0 cr2(16)
    at = 128 + 16 + 4 + 8 + 80 + 120 + 80 + 20 + 16
    assert raw[at : at + 8] == (0xABC000).to_bytes(8, "big")


@pytest.mark.parametrize(
    "fields, match",
    [
        ([{"name": "x", "type": "capability"}], "no fixed size"),
        ([{"name": "s", "type": "struct", "struct": {"fields": [{"name": "a", "type": "uint32", "size": 4}]},
           "size": 8}], "says 8 bytes, its parts 4"),
        ([{"name": "s", "type": "struct", "struct": {"fields": [], "subsections": [{}]}, "size": 0}],
         "subsections"),
        ([{"name": "s", "type": "struct", "size": 4}], "no description"),
        ([{"name": "a", "type": "uint8", "size": 1, "array_len": -1}], "array_len"),
        (["not an object"], "not an object"),
    ],
)
def test_undescribable_fields(fields: list[Any], match: str) -> None:
    with pytest.raises(VmstateDescriptionError, match=match):
        vmstate_struct(fields)


# -- round trips ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(cpu=cpu_states(), index=st.integers(0, 255))
def test_payload_round_trip(cpu: CpuState, index: int) -> None:
    cpu.index = index
    raw = cpu_payload(cpu)
    assert len(raw) == X86_64_CPU_STATE_SIZE
    same_cpu(decode_cpu_section(raw, CPU_VERSION, CPU_DESC, index), cpu)
    same_cpu(decode_cpu_section(raw, CPU_VERSION, None, index), cpu)  # the no-description layout


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cpus=st.lists(cpu_states(), min_size=1, max_size=4), footers=st.booleans())
def test_stream_round_trip(tmp_path: Path, cpus: list[CpuState], footers: bool) -> None:
    for i, c in enumerate(cpus):
        c.index = i
    order = list(reversed(cpus))  # saved in any order, read back by index
    p = write(tmp_path, "rt.qevm", cpus=order, footers=footers)
    with open_dump(p) as d:
        assert not d.warnings, d.warnings
        assert [c.index for c in d.cpus] == list(range(len(cpus)))
        for got, want in zip(d.cpus, cpus, strict=True):
            same_cpu(got, want)
            assert got.sources == ["migration cpu section"]
        secs = [(s["idstr"], s["instance_id"]) for s in d.facts["sections"] if s["idstr"].startswith("cpu")]
        assert sorted(secs) == sorted([(n, c.index) for c in cpus for n in ("cpu", "cpu_common")])


def test_stream_without_cpu_sections_has_no_cpus(tmp_path: Path) -> None:
    with open_dump(write(tmp_path, "none.qevm")) as d:
        assert d.cpus == [] and not d.warnings


# -- a generated guest, saved: KASLR from its page tables ------------------------------------------


@pytest.mark.parametrize("kw", [{"seed": 5}, {"seed": 9, "pti": True}, {"seed": 11, "la57": True, "cpus": 1}])
def test_generated_guest_kaslr_from_saved_state(tmp_path: Path, kw: dict[str, Any]) -> None:
    g = build(Scenario(ram=64 * MIB, device="upstream", **kw))
    assert g.kernel is not None
    rec = g.vmcoreinfo_device.record()
    from vmci.formats.migration.writer import VmcoreinfoRecord

    devices = standard_devices(vmcoreinfo_record=VmcoreinfoRecord(**rec))
    p = write(tmp_path, "guest.qevm", memory=g.mem, cpus=g.cpus, devices=devices)
    with open_dump(p) as d:
        assert not d.warnings, d.warnings
        assert len(d.cpus) == len(g.cpus)
        for got, want in zip(d.cpus, g.cpus, strict=True):
            assert (got.cr3, got.cr4, got.idt_base, got.regs["rip"]) == (
                want.cr3, want.cr4, want.idt_base, want.regs["rip"])
            assert got.la57 == bool(kw.get("la57")) and got.paging
        res = kaslr_from_page_tables(d.memory, d.cpus)
        assert (res.kerneloffset, res.phys_base) == (g.kernel.kaslr_offset, g.kernel.phys_base)
        assert res.agree
        rep = kaslr_for_dump(d, scan=True)  # the fw_cfg record leads to the note; both must agree
        assert (rep.kerneloffset, rep.phys_base) == (g.kernel.kaslr_offset, g.kernel.phys_base)
        assert rep.verdict == "agree" and rep.vmcoreinfo is not None and rep.page_tables is not None


# -- streams without a VM description ---------------------------------------------------------------


def test_no_vmdesc_uses_the_known_layout(tmp_path: Path) -> None:
    cpus = [CpuState(index=i, regs={"rip": 0xFFFFFFFF81000000 + i}, cr0=0x80050033, cr3=0x1000 * (i + 1))
            for i in range(2)]
    with open_dump(write(tmp_path, "nodesc.qevm", cpus=cpus, vmdesc=False)) as d:
        assert d.facts["vmdesc_offset"] is None and not d.warnings
        assert [(c.index, c.cr3, c.regs["rip"]) for c in d.cpus] == [
            (0, 0x1000, 0xFFFFFFFF81000000), (1, 0x2000, 0xFFFFFFFF81000001)]
        assert "no VM description" in d.cpus[0].sources[0]


def _cpu_device(payload: bytes, version: int = CPU_VERSION, fields: Any = None) -> Device:
    desc = {"fields": X86_64_CPU_FIELDS if fields is None else fields}
    return Device("cpu", payload, desc, version=version)


@pytest.mark.parametrize(
    "payload, version, match",
    [
        (cpu_payload(CpuState(index=0)), 11, "version 11"),
        (cpu_payload(CpuState(index=0))[:-8], CPU_VERSION, "1809 bytes"),
        (cpu_payload(CpuState(index=0)) + b"\x00" * 8, CPU_VERSION, "1825 bytes"),
    ],
    ids=["version", "short", "no-subsection-after"],
)
def test_no_vmdesc_unknown_layout_gives_a_warning(tmp_path: Path, payload: bytes, version: int,
                                                   match: str) -> None:
    p = write(tmp_path, "bad.qevm", devices=[_cpu_device(payload, version)], vmdesc=False)
    with open_dump(p) as d:
        assert d.cpus == []
        assert any("no VM description" in w and match in w for w in d.warnings), d.warnings


# -- instance ids -----------------------------------------------------------------------------------


def test_repeated_instance_ids_number_vcpus_in_stream_order(tmp_path: Path) -> None:
    """cpu sections that all say instance 0 (a broken writer): vCPUs follow stream order."""
    cpus = [CpuState(index=i, regs={"rbx": i}, cr3=0x5000 + i * 0x1000) for i in range(3)]
    devs = [dataclasses.replace(d, instance_id=0) for d in cpu_devices(cpus) if d.idstr == "cpu"]
    with open_dump(write(tmp_path, "dup.qevm", devices=devs)) as d:
        assert {s["instance_id"] for s in d.facts["sections"] if s["idstr"] == "cpu"} == {0}
        got = [(c.index, c.regs["rbx"], c.cr3) for c in d.cpus]
        assert got == [(i, i, 0x5000 + i * 0x1000) for i in range(3)]
        assert any("repeat instance id" in w for w in d.warnings)


# -- malformed sections -----------------------------------------------------------------------------


def _renamed(name: str, new: str) -> list[dict[str, Any]]:
    fields = copy.deepcopy(X86_64_CPU_FIELDS)
    for f in fields:
        if f["name"] == name:
            f["name"] = new
    return fields


GOOD = cpu_payload(CpuState(index=0, cr3=0x7000))
SUB = SubsectionHeader.build({"type": QEMU_VM_SUBSECTION, "name": "cpu/poll_control_msr", "version_id": 1})


@pytest.mark.parametrize(
    "payload, fields, match",
    [
        (GOOD[:100], None, "has 100 bytes but its fields need 1817"),
        (GOOD, [*X86_64_CPU_FIELDS, {"name": "x", "type": "buffer", "size": 9}],
         "1817 bytes but its fields need 1826"),
        (GOOD + b"\x00" * 9, None, "not a subsection marker"),
        (GOOD, _renamed("env.cr[3]", "env.cr3"), "lacks env.cr[3]"),
        (GOOD, [{"name": "env.regs", "type": "capability"}], "no fixed layout"),
        (GOOD[:8 * 8], [{"name": "env.regs", "array_len": 8, "type": "uint64", "size": 8}], "lacks env.eip"),
    ],
    ids=["short", "short-for-description", "no-subsection-after", "renamed", "variable-size", "few-fields"],
)
def test_malformed_cpu_section_gives_a_warning(tmp_path: Path, payload: bytes, fields: Any,
                                               match: str) -> None:
    good = cpu_devices([CpuState(index=1, cr3=0x9000)])  # a second, sound vCPU still comes through
    devs = [_cpu_device(payload, fields=fields), *good]
    with open_dump(write(tmp_path, "mal.qevm", devices=devs)) as d:
        assert any(match in w and "gives no registers" in w for w in d.warnings), d.warnings
        assert [c.cr3 for c in d.cpus] == [0x9000]


def test_subsections_after_the_fields_are_skipped(tmp_path: Path) -> None:
    payload = GOOD + SUB + (1).to_bytes(8, "big")
    desc_subs = [{"vmsd_name": "cpu/poll_control_msr", "version": 1,
                  "fields": [{"name": "env.poll_control_msr", "type": "uint64", "size": 8}]}]
    dev = Device("cpu", payload, {"fields": X86_64_CPU_FIELDS, "subsections": desc_subs}, version=CPU_VERSION)
    for vmdesc in (True, False):
        with open_dump(write(tmp_path, f"sub{vmdesc}.qevm", devices=[dev], vmdesc=vmdesc)) as d:
            assert not d.warnings and [c.cr3 for c in d.cpus] == [0x7000]


def test_decode_rejects_wrong_register_counts() -> None:
    fields = copy.deepcopy(X86_64_CPU_FIELDS)
    fields[0]["array_len"] = 4
    values = cpu_values(CpuState(index=0))
    values["env.regs"] = values["env.regs"][:4]
    raw = vmstate_struct(fields).build(values)
    with pytest.raises(CpuSectionError, match="4 registers"):
        decode_cpu_section(raw, CPU_VERSION, {"fields": fields}, 0)


def test_i386_target_register_names() -> None:
    """qemu-system-i386 saves target_ulong registers as 32 bits: eax.. names, eip."""
    fields = copy.deepcopy(X86_64_CPU_FIELDS)

    def narrow(fs: list[dict[str, Any]]) -> None:
        for f in fs:
            if f["name"] in ("env.regs", "env.eip", "env.eflags", "base") or f["name"].startswith("env.cr["):
                f["type"], f["size"] = "uint32", 4
            if f["name"] == "env.regs":
                f["array_len"] = 8
            if f["type"] == "struct":
                narrow(f["struct"]["fields"])
                f["size"] = vmstate_struct(f["struct"]["fields"]).sizeof()

    narrow(fields)
    values = cpu_values(CpuState(index=0, regs={"rax": 7, "rip": 0xC1000000, "cs": 0x60}, cr3=0x1234000,
                                 idt_base=0xC2000000))
    values["env.regs"] = values["env.regs"][:8]
    cpu = decode_cpu_section(vmstate_struct(fields).build(values), CPU_VERSION, {"fields": fields}, 3)
    assert (cpu.index, cpu.regs["eax"], cpu.regs["eip"], cpu.regs["cs"]) == (3, 7, 0xC1000000, 0x60)
    assert "rax" not in cpu.regs and (cpu.cr3, cpu.idt_base) == (0x1234000, 0xC2000000)


@pytest.mark.parametrize(
    "fields, match",
    [
        ([*_renamed("env.segs", "env.segs.old"),
          {"name": "env.segs", "array_len": 6, "type": "uint64", "size": 8}], "another shape"),
        ([*_renamed("env.cr[3]", "env.cr3"), {"name": "env.cr[3]", "type": "buffer", "size": 8}],
         "non-integer"),
        ([*_renamed("env.regs", "env.regs.old"), {"name": "env.regs", "type": "uint64", "size": 8}],
         "another shape"),
    ],
    ids=["segments-as-integers", "cr3-as-buffer", "regs-not-an-array"],
)
def test_description_with_odd_shapes_gives_a_warning(tmp_path: Path, fields: Any, match: str) -> None:
    extra = vmstate_struct(fields[len(X86_64_CPU_FIELDS):]).sizeof()
    devs = [_cpu_device(GOOD + b"\x01" * extra, fields=fields)]
    with open_dump(write(tmp_path, "odd.qevm", devices=devs)) as d:
        assert d.cpus == [] and any(match in w for w in d.warnings), d.warnings


def test_description_entry_with_odd_instance_id(tmp_path: Path) -> None:
    """A VM description is data: an instance id that is no integer leaves that entry unused."""
    dev = Device("cpu", GOOD, {"fields": X86_64_CPU_FIELDS, "instance_id": [0]}, version=CPU_VERSION)
    with open_dump(write(tmp_path, "inst.qevm", devices=[dev])) as d:
        assert d.cpus == [] and any("no VM description entry" in w for w in d.warnings), d.warnings


def test_description_without_a_device_list(tmp_path: Path) -> None:
    from vmci.layouts.migration import QEMU_VM_VMDESCRIPTION, VmdescHeader

    p = write(tmp_path, "nolist.qevm", cpus=[CpuState(index=0, cr3=0x3000)], vmdesc=False)
    text = b'{"page_size": 4096, "devices": 7}'
    with p.open("ab") as f:
        f.write(VmdescHeader.build({"type": QEMU_VM_VMDESCRIPTION, "length": len(text)}) + text)
    with open_dump(p) as d:
        assert any("has no device list" in w for w in d.warnings), d.warnings
        assert [c.cr3 for c in d.cpus] == [0x3000] and "no VM description" in d.cpus[0].sources[0]
