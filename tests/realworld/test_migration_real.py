"""Real QEMU migration streams, read by vmci and checked against the ELF dump of the same stopped
moment, the guest's own /sys/kernel/vmcoreinfo and QMP."""

from __future__ import annotations

import struct
import uuid

import pytest

from vmci.core.dump import Dump
from vmci.formats import open_dump
from vmci.testing.qemu import SCENARIOS, RealGuest

pytestmark = pytest.mark.realworld

ALL = list(SCENARIOS)
WITH_NOTE_DEVICE = [name for name, sc in SCENARIOS.items() if sc.vmcoreinfo]
WITH_VMGENID = [name for name, sc in SCENARIOS.items() if sc.vmgenid_guid]
PS = 4096


def note_at(dump: Dump, paddr: int) -> tuple[bytes, bytes]:
    """(whole note, descriptor) of the ELF note at ``paddr`` in guest RAM."""
    namesz, descsz, _ = struct.unpack("<III", dump.memory.read(paddr, 12))
    start = 12 + -(-namesz // 4) * 4
    whole = dump.memory.read(paddr, start + -(-descsz // 4) * 4)
    return whole, whole[start : start + descsz]


@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_real_stream_opens_and_maps_q35_ram(scenario: RealGuest) -> None:
    with open_dump(scenario["migration"]) as d:
        assert d.format == "qemu-migration" and d.arch == "x86_64"
        assert not d.warnings, d.warnings
        assert d.facts["machine"].startswith("pc-q35-") and d.facts["eof"] and d.facts["section_footers"]
        assert d.facts["vmdesc_devices"] > 10
        blocks = {b["name"]: b for b in d.facts["ram_blocks"]}
        memory = SCENARIOS[scenario.name].memory  # what the harness gave QEMU's -m, e.g. 256M
        assert memory.endswith("M")
        ram = int(memory[:-1]) << 20
        assert blocks["pc.ram"]["size"] == ram and blocks["pc.ram"]["absent_pages"] == 0
        assert blocks["pc.ram"]["gpa"] == [[0, ram]]
        assert {"/rom@etc/acpi/tables", "/rom@etc/table-loader"} <= set(blocks)
        assert blocks["/rom@etc/acpi/tables"]["gpa"] is None
        assert b"etc/acpi/tables" in d.memory.block("/rom@etc/table-loader")
        assert d.memory.contains(0, ram)


@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_physical_reads_agree_with_the_elf_dump(scenario: RealGuest) -> None:
    paddr = scenario.vmcoreinfo_paddr
    code = scenario.guest.iomem("Kernel code")[0]
    with open_dump(scenario["migration"]) as mig, open_dump(scenario["elf"]) as elf:
        probes = set(range(0, 0x9F000, 0x3000))  # low RAM
        probes |= {paddr, paddr + PS}  # the note's pages
        probes |= set(range(code[0] & ~(PS - 1), code[1], 0x21000))  # the kernel image
        probes |= {(256 << 20) - PS * k for k in range(1, 40)}  # top of RAM
        probes |= set(range(0x100000, 256 << 20, 0x7F000))  # everywhere, sparsely
        compared = 0
        for addr in sorted(probes):
            if elf.memory.readable(addr, PS):
                assert mig.memory.read(addr, PS) == elf.memory.read(addr, PS), hex(addr)
                compared += 1
        assert compared > 600


@pytest.mark.parametrize("scenario", WITH_NOTE_DEVICE, indirect=True)
def test_upstream_vmcoreinfo_record_and_note(scenario: RealGuest) -> None:
    with open_dump(scenario["migration"]) as mig, open_dump(scenario["elf"]) as elf:
        dev = mig.facts["devices"]["vmcoreinfo"]
        assert dev["layout"] == "upstream" and dev["has_vmcoreinfo"] is True
        assert (dev["guest_format"], dev["size"]) == (1, 4132)
        assert dev["paddr"] == scenario.vmcoreinfo_paddr
        assert dev["host_format"] == 0  # Linux 6.1 writes 0 over QEMU's 1
        saved = mig.saved_state.devices
        assert saved.vmcoreinfo_record.paddr == scenario.vmcoreinfo_paddr
        assert saved.vmcoreinfo_addr_blob is None
        # the note in the stream's RAM is the ELF dump's VMCOREINFO note, byte for byte
        whole, desc = note_at(mig, dev["paddr"])
        assert desc == elf.notes_named("VMCOREINFO")[0].desc == scenario.note_desc
        assert mig.memory.read(dev["paddr"], dev["size"]) == scenario.note
        assert whole[12:23] == b"VMCOREINFO\0"


def test_without_device_has_no_device_state(without_device: RealGuest) -> None:
    with open_dump(without_device["migration"]) as d:
        assert d.facts["devices"] == {} and d.facts["saved_state"] == {}
        _, desc = note_at(d, without_device.vmcoreinfo_paddr)
        assert desc == without_device.note_desc


@pytest.mark.parametrize("scenario", WITH_VMGENID, indirect=True)
def test_vmgenid_blob_leads_to_the_qmp_guid(scenario: RealGuest) -> None:
    with open_dump(scenario["migration"]) as d:
        blob = d.saved_state.devices.vmgenid_addr_blob
        addr = struct.unpack("<Q", blob)[0]
        assert addr % PS == 40 and d.facts["devices"]["vmgenid"]["vmgenid_addr"] == addr
        page = d.memory.read(addr - 40, PS)
        assert page[:40] == bytes(40)
        assert uuid.UUID(bytes_le=page[40:56]) == uuid.UUID(scenario.facts["qmp_guid"])
        assert page[56:] == bytes(PS - 56)
