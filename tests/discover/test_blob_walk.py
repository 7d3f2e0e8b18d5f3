"""The seed's walk from the saved address blob, on guests built the real way (QEMU device model,
firmware running the table-loader, the RFC guest driver, the kernel's note); one fault per test."""

from __future__ import annotations

import pytest
from conftest import SMALL_KERNEL as SMALL

from vmci.core.memory import Range, SparseMemory
from vmci.discover.address_blob import walk_blob
from vmci.discover.finding import Finding
from vmci.kernel.vmcoreinfo import build_note
from vmci.layouts.acpi import SdtHeader, checksum8
from vmci.machine.qemu_devices import MAX_GUEST_NOTE_SIZE
from vmci.producer.devices import RfcGuestDriver, RfcVmcoreinfoDevice
from vmci.producer.firmware import boot
from vmci.producer.linux import PlacedVmcoreinfo, place_vmcoreinfo

MiB = 1 << 20
RAM = 128 * MiB
NOTE, DATA = 0x2345000, 0x2347000


Guest = tuple[SparseMemory, RfcVmcoreinfoDevice, PlacedVmcoreinfo]


def rfc_guest(offset: int = 40, flavor: str = "seabios") -> Guest:
    mem = SparseMemory([Range(0, RAM)])
    dev = RfcVmcoreinfoDevice(offset)
    _, _, fw = boot(mem, [dev], flavor=flavor, rsdp_revision=2 if flavor == "ovmf" else 0)
    placed = place_vmcoreinfo(mem, SMALL, NOTE, DATA)
    RfcGuestDriver(mem).run(placed.note_paddr, placed.note_size, fw.acpi)
    return mem, dev, placed


def page(dev: RfcVmcoreinfoDevice) -> int:
    return dev.address - dev.offset


def fails(f: Finding) -> list[str]:
    return [f"{s.action}: {s.detail}" for c in f.rejected for s in c.evidence if s.verdict == "fail"]


def only_fail(f: Finding, action: str) -> str:
    assert not f.found
    got = fails(f)
    assert [g.split(":")[0] for g in got] == [action], got
    return got[0]


@pytest.mark.parametrize("flavor", ["seabios", "ovmf"])
def test_blob_walk_reaches_the_note(flavor: str) -> None:
    mem, dev, placed = rfc_guest(flavor=flavor)
    f = walk_blob(mem, bytes(dev.addr_le))
    assert f.found and f.chosen is not None
    c = f.chosen
    assert c.text is not None and c.text.raw == placed.text
    assert c.paddr == NOTE and c.facts["page"] == page(dev) and c.facts["record_size"] == placed.note_size
    assert c.note_size == 24 + ((len(placed.text) + 3) & ~3)
    assert "40-byte" in c.facts["layout"]
    actions = [s.action for s in c.evidence]
    for a in ("blob alignment", "suppressor", "version", "size bounds", "paddr in RAM", "note name",
              "note type", "note descsz", "text", "layout"):
        assert a in actions
    assert all(s.verdict in ("ok", "info") for s in c.evidence)


def test_non_zero_suppressor_bytes_are_each_reported() -> None:
    mem, dev, _ = rfc_guest()
    mem.write(page(dev) + 3, b"\x7f")
    mem.write(page(dev) + 17, b"\x01")
    f = walk_blob(mem, bytes(dev.addr_le))
    assert f.found  # QEMU does not read the suppressor: a warning, not a failure
    warn = [s for s in f.chosen.evidence if s.verdict == "warn"]  # type: ignore[union-attr]
    assert len(warn) == 1 and warn[0].action == "suppressor"
    assert all(w in warn[0].detail for w in ("2 non-zero byte(s)", "+3=0x7f", "+17=0x01"))


@pytest.mark.parametrize("kind", ["SDT", "FACS"])
def test_suppressor_that_passes_the_ovmf_probe(kind: str) -> None:
    mem, dev, _ = rfc_guest()
    if kind == "SDT":
        hdr = bytearray(SdtHeader.build({"signature": b"SSDT", "length": 36, "revision": 1, "checksum": 0,
                                         "oem_id": b"BOCHS ", "oem_table_id": b"EVIL    ", "oem_revision": 1,
                                         "creator_id": b"BXPC", "creator_revision": 1}))
        hdr[9] = (-checksum8(hdr)) & 0xFF
    else:
        hdr = bytearray(b"FACS" + (64).to_bytes(4, "little"))
    mem.write(page(dev), bytes(hdr))
    f = walk_blob(mem, bytes(dev.addr_le))
    detail = only_fail(f, "ovmf probe")
    assert f"OVMF's {kind} header probe" in detail
    assert any(s.action == "suppressor" and s.verdict == "warn" for c in f.rejected for s in c.evidence)


def test_unknown_version_is_a_named_error() -> None:
    mem, dev, _ = rfc_guest()
    mem.write(dev.address, (1).to_bytes(4, "little"))
    detail = only_fail(walk_blob(mem, bytes(dev.addr_le)), "version")
    assert "unknown vmcoreinfo memory version 1" in detail


def test_paddr_outside_ram() -> None:
    mem, dev, _ = rfc_guest()
    mem.write(dev.address + 4, (RAM + 0x1000).to_bytes(8, "little"))
    detail = only_fail(walk_blob(mem, bytes(dev.addr_le)), "paddr in RAM")
    assert f"{RAM + 0x1000:#x} is outside the dump's RAM" in detail


@pytest.mark.parametrize(("size", "words"), [(MAX_GUEST_NOTE_SIZE + 1, "exceeds QEMU's limit"),
                                             (11, "smaller than a note header")])
def test_size_out_of_qemu_bounds(size: int, words: str) -> None:
    mem, dev, _ = rfc_guest()
    mem.write(dev.address + 12, size.to_bytes(4, "little"))
    assert words in only_fail(walk_blob(mem, bytes(dev.addr_le)), "size bounds")


def test_wrong_note_name() -> None:
    mem, dev, _ = rfc_guest()
    mem.write(NOTE + 12, b"VMCOREINFX")
    assert "VMCOREINFX" in only_fail(walk_blob(mem, bytes(dev.addr_le)), "note name")


def test_wrong_note_type() -> None:
    mem, dev, _ = rfc_guest()
    mem.write(NOTE + 8, (1).to_bytes(4, "little"))
    assert "n_type 1" in only_fail(walk_blob(mem, bytes(dev.addr_le)), "note type")


def test_truncated_note_descsz_beyond_size() -> None:
    mem, dev, _ = rfc_guest()
    mem.write(dev.address + 12, (100).to_bytes(4, "little"))
    detail = only_fail(walk_blob(mem, bytes(dev.addr_le)), "note descsz")
    assert "more than the registered size 100" in detail


def test_truncated_note_descsz_beyond_ram() -> None:
    mem, dev, placed = rfc_guest()
    at = RAM - 64
    mem.write(at, build_note(placed.text)[:64])
    mem.write(dev.address + 4, at.to_bytes(8, "little"))
    f = walk_blob(mem, bytes(dev.addr_le))
    assert "runs past the dump's RAM" in only_fail(f, "note descsz")
    assert any(s.action == "paddr in RAM" and s.verdict == "warn" for s in f.rejected[0].evidence)


def test_36_byte_layout_only_when_asked() -> None:
    mem, dev, placed = rfc_guest(offset=36)
    f = walk_blob(mem, bytes(dev.addr_le), rfc_offset=36)
    assert f.found and f.chosen is not None and f.chosen.text is not None
    assert f.chosen.text.raw == placed.text and "36-byte" in f.chosen.facts["layout"]
    assert any(s.action == "layout" and "36-byte" in s.detail for s in f.chosen.evidence)
    at40 = walk_blob(mem, bytes(dev.addr_le))
    detail = only_fail(at40, "blob alignment")
    assert "not a 4 KiB page + 40" in detail and "rfc_offset=36" in detail


def test_40_byte_page_is_not_read_at_36() -> None:
    mem, dev, _ = rfc_guest()
    detail = only_fail(walk_blob(mem, bytes(dev.addr_le), rfc_offset=36), "blob alignment")
    assert "rfc_offset=40" in detail


def test_blob_not_page_plus_40() -> None:
    mem, dev, _ = rfc_guest()
    bad = (page(dev) + 48).to_bytes(8, "little")
    detail = only_fail(walk_blob(mem, bad), "blob alignment")
    assert "offset in page 0x30" in detail


@pytest.mark.parametrize(("blob", "words"), [(bytes(8), "zero"), (b"\x28\0\0", "3 bytes")])
def test_unusable_blob(blob: bytes, words: str) -> None:
    mem, _, _ = rfc_guest()
    f = walk_blob(mem, blob)
    assert not f.found and words in fails(f)[0]


def test_high_dword_is_ignored_like_qemu() -> None:
    mem, dev, _ = rfc_guest()
    blob = (dev.address | (5 << 32)).to_bytes(8, "little")
    f = walk_blob(mem, blob)
    assert f.found and any("low 32 bits" in s.detail for s in f.chosen.evidence)  # type: ignore[union-attr]


def test_page_not_in_the_dump() -> None:
    mem, _, _ = rfc_guest()
    detail = only_fail(walk_blob(mem, (RAM + 40).to_bytes(8, "little")), "page readable")
    assert "not all in the dump" in detail
