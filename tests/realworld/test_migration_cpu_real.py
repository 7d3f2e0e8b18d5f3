"""vCPU state from real QEMU 7.2 migration streams, checked against the ELF dump QEMU wrote at the same
stopped moment (its QEMU CPU notes) and KASLR from the stream's page tables against the kernel's own
VMCOREINFO."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from vmci.analysis.kaslr import kaslr_for_dump
from vmci.arch.x86_64.kaslr import kaslr_from_page_tables
from vmci.discover.run import find_vmcoreinfo
from vmci.formats import open_dump
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.layouts.migration_cpu import CPU_COMMON_FIELDS, X86_64_CPU_FIELDS
from vmci.testing.qemu import RealGuest

pytestmark = pytest.mark.realworld
GUESTS = ["with_device", "without_device"]
FIELDS = ("cr0", "cr2", "cr3", "cr4", "gdt_base", "gdt_limit", "idt_base", "idt_limit", "kernel_gs_base")


@pytest.fixture(params=GUESTS)
def guest(request: pytest.FixtureRequest) -> RealGuest:
    return request.getfixturevalue(request.param)


def test_stream_cpus_equal_the_elf_notes(guest: RealGuest) -> None:
    with open_dump(guest["migration"]) as mig, open_dump(guest["elf"]) as elf:
        assert not mig.warnings, mig.warnings
        assert len(mig.cpus) == len(elf.cpus) == guest.facts["cpus"] == 2
        for got, want in zip(mig.cpus, elf.cpus, strict=True):
            assert got.index == want.index and got.sources == ["migration cpu section"]
            for name in FIELDS:
                assert getattr(got, name) == getattr(want, name), name
            assert got.regs["rip"] == want.regs["rip"] and got.paging
            # every register the ELF notes carry, but orig_rax (a prstatus-only field)
            assert got.regs == {k: v for k, v in want.regs.items() if k != "orig_rax"}


def test_declared_layout_is_the_streams_description(guest: RealGuest) -> None:
    """The field lists vmci writes (and reads streams without a description with) are QEMU 7.2's."""
    with open_dump(guest["migration"]) as d:
        at = d.facts["vmdesc_offset"]
    with open(guest["migration"], "rb") as f:
        f.seek(at)
        kind, length = struct.unpack(">BI", f.read(5))
        assert kind == 0x06  # QEMU_VM_VMDESCRIPTION
        desc = json.loads(f.read(length))
    cpu = [dev for dev in desc["devices"] if dev["name"] == "cpu"]
    common = [dev for dev in desc["devices"] if dev["name"] == "cpu_common"]
    assert [dev["instance_id"] for dev in cpu] == [0, 1] and all(dev["version"] == 12 for dev in cpu)
    assert all(dev["fields"] == X86_64_CPU_FIELDS for dev in cpu)
    assert all(dev["fields"] == CPU_COMMON_FIELDS for dev in common)


def test_stream_without_description_reads_the_same(guest: RealGuest, tmp_path: Path) -> None:
    """The stream cut before its VM description (as a suppress-vmdesc machine writes it)."""
    with open_dump(guest["migration"]) as d:
        at = d.facts["vmdesc_offset"]
        want = d.cpus
    cut = tmp_path / "nodesc.migration"
    with open(guest["migration"], "rb") as src, cut.open("wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.truncate(at)
    with open_dump(cut) as d:
        assert d.facts["vmdesc_offset"] is None and not d.warnings, d.warnings
        assert len(d.cpus) == 2
        for got, ref in zip(d.cpus, want, strict=True):
            assert "no VM description" in got.sources[0]
            assert (got.regs, got.cr0, got.cr3, got.cr4, got.idt_base, got.gdt_base) == (
                ref.regs, ref.cr0, ref.cr3, ref.cr4, ref.idt_base, ref.gdt_base)


def test_kaslr_from_stream_page_tables_is_the_kernels(guest: RealGuest) -> None:
    kernel = VmcoreInfo.parse(guest.note_desc)  # the note as the guest wrote it (pmemsave)
    with open_dump(guest["migration"]) as d:
        res = kaslr_from_page_tables(d.memory, d.cpus)
        assert res.agree and len(res.cpus) == 2
        assert (res.kerneloffset, res.phys_base) == (kernel.kerneloffset, kernel.phys_base.value)
        assert res.phys_base == guest.facts["phys_base"] and res.kerneloffset != 0
        assert res.text_va == guest.guest.kallsyms["_text"]
        # the VMCOREINFO text vmci finds in the stream says the same
        chosen = find_vmcoreinfo(d).chosen
        assert chosen is not None
        assert chosen.text.kerneloffset == res.kerneloffset
        assert chosen.text.number("phys_base") == res.phys_base
        rep = kaslr_for_dump(d, scan=True)
        assert rep.verdict == "agree"
        assert (rep.kerneloffset, rep.phys_base) == (res.kerneloffset, res.phys_base)
