"""The ACPI walk (RSDP -> RSDT/XSDT -> SSDT VMCOREIN -> VCIA -> page) on firmware-built guests."""

from __future__ import annotations

import pytest
from conftest import SMALL_KERNEL as SMALL

from vmci.core.memory import Range, SparseMemory
from vmci.discover.acpi import walk_acpi
from vmci.discover.address_blob import walk_blob
from vmci.firmware.acpi import TABLE_FOUND, TABLE_MISSING, find_ssdt
from vmci.producer.devices import RfcGuestDriver, RfcVmcoreinfoDevice, VmgenidDevice
from vmci.producer.firmware import boot
from vmci.producer.linux import PlacedVmcoreinfo, place_vmcoreinfo

MiB = 1 << 20
NOTE, DATA = 0x2345000, 0x2347000


Guest = tuple[SparseMemory, RfcVmcoreinfoDevice, PlacedVmcoreinfo]


def rfc_guest(offset: int = 40, flavor: str = "seabios") -> Guest:
    mem = SparseMemory([Range(0, 128 * MiB)])
    dev = RfcVmcoreinfoDevice(offset)
    _, _, fw = boot(mem, [dev], flavor=flavor, rsdp_revision=2 if flavor == "ovmf" else 0)
    placed = place_vmcoreinfo(mem, SMALL, NOTE, DATA)
    RfcGuestDriver(mem).run(placed.note_paddr, placed.note_size, fw.acpi)
    return mem, dev, placed


def fail_actions(f: object) -> list[str]:
    return [s.action for c in f.rejected for s in c.evidence if s.verdict == "fail"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("flavor", ["seabios", "ovmf"])
def test_acpi_walk_and_blob_walk_reach_the_same_note(flavor: str) -> None:
    mem, dev, placed = rfc_guest(flavor=flavor)
    a = walk_acpi(mem)
    b = walk_blob(mem, bytes(dev.addr_le))
    assert a.found and b.found and a.chosen is not None and b.chosen is not None
    assert a.chosen.text == b.chosen.text and a.chosen.text is not None and a.chosen.text.raw == placed.text
    assert a.facts["vcia"] == dev.address - 40 == a.chosen.facts["page"]
    assert a.facts["present"] is True
    actions = [s.action for s in a.chosen.evidence]
    assert "Name(VCIA, DWordConst)" in actions and "SSDT with OEM table id 'VMCOREIN'" in actions
    if flavor == "ovmf":  # the RSDP is not in the F-segment: the all-RAM search found it
        assert a.facts["rsdp"] >= 0x100000
        assert not walk_acpi(mem, scan_all=False).found


def test_36_byte_layout_through_acpi_and_why_40_fails() -> None:
    mem, _, placed = rfc_guest(offset=36)
    ok = walk_acpi(mem, rfc_offset=36)
    assert ok.found and ok.chosen is not None and ok.chosen.text is not None
    assert ok.chosen.text.raw == placed.text and "36-byte" in ok.chosen.facts["layout"]
    bad = walk_acpi(mem)
    assert not bad.found and fail_actions(bad) == ["version"]
    detail = next(s.detail for s in bad.rejected[0].evidence if s.action == "version")
    assert "unknown vmcoreinfo memory version" in detail and "rfc_offset=36" in detail


def test_bad_ssdt_checksum() -> None:
    mem, _, _ = rfc_guest()
    table, _ = find_ssdt(mem, "VMCOREIN")
    assert table is not None
    mem.write(table.address + 100, bytes([table.data[100] ^ 0x55]))
    f = walk_acpi(mem)
    assert not f.found and fail_actions(f) == ["SSDT checksum", "SSDT with OEM table id 'VMCOREIN'"]
    assert f.facts["present"] is True


def test_missing_ssdt() -> None:
    mem = SparseMemory([Range(0, 128 * MiB)])
    boot(mem, [VmgenidDevice()])  # ACPI exists, the vmcoreinfo device does not
    f = walk_acpi(mem)
    assert not f.found and fail_actions(f) == ["SSDT with OEM table id 'VMCOREIN'"]
    assert f.facts["present"] is False
    assert "VMGENID" in f.rejected[0].evidence.steps[-1].detail


def test_presence_is_decided_by_step_codes_not_wording() -> None:
    mem, _, _ = rfc_guest()
    table, ev = find_ssdt(mem, "VMCOREIN")
    assert table is not None and [s.paddr for s in ev if s.code == TABLE_FOUND] == [table.address]
    _, ev = find_ssdt(mem, "NOSUCHID")
    assert [s.verdict for s in ev if s.code == TABLE_MISSING] == ["fail"] and not ev.has(TABLE_FOUND)


def test_no_acpi_at_all() -> None:
    mem = SparseMemory([Range(0, 16 * MiB)])
    f = walk_acpi(mem)
    assert not f.found and fail_actions(f) == ["RSDP"] and "rsdp" not in f.facts


def test_page_faults_are_the_blob_walks_checks() -> None:
    mem, dev, _ = rfc_guest()
    mem.write(dev.address, (7).to_bytes(4, "little"))
    f = walk_acpi(mem)
    assert fail_actions(f) == ["version"]
    assert fail_actions(walk_blob(mem, bytes(dev.addr_le))) == ["version"]


def test_unlinked_vcia() -> None:
    mem, _, _ = rfc_guest()
    table, _ = find_ssdt(mem, "VMCOREIN")
    assert table is not None
    mem.write(table.address + 42, bytes(4))  # as before firmware's ADD_POINTER
    mem.write(table.address + 9, bytes([(table.data[9] + sum(table.data[42:46])) & 0xFF]))
    f = walk_acpi(mem)
    assert fail_actions(f) == ["VCIA"]
