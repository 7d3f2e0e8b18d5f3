"""fw_cfg store and DMA, the vmcoreinfo (RFC and upstream) and vmgenid devices, and the guest
drivers that fill them in."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmci.core.memory import Range, SparseMemory
from vmci.errors import FormatError, NotFoundError, UsageError
from vmci.layouts.fw_cfg import (
    DMA_CTL_ERROR,
    DMA_CTL_READ,
    DMA_CTL_SELECT,
    DMA_CTL_WRITE,
    FwCfgDirectory,
    FwCfgDmaAccess,
    FwCfgVmcoreinfo,
    GuidLE,
    VmcoreinfoRfcContent,
    VmgenidPage,
    vmcoreinfo_rfc_page,
)
from vmci.producer.devices import (
    LinuxFwCfgWriter,
    RfcGuestDriver,
    RfcVmcoreinfoDevice,
    UpstreamVmcoreinfoDevice,
    VmgenidDevice,
    evaluate_addr,
)
from vmci.producer.firmware import boot
from vmci.producer.fw_cfg import FwCfg, dma_write_file

NOTE_PADDR, NOTE_SIZE = 0x2A3F000, 4132


def ram() -> SparseMemory:
    return SparseMemory([Range(0, 0x8000000)])


# -- fw_cfg ------------------------------------------------------------------------------------

def test_selectors_sorted_by_name_and_directory() -> None:
    fw = FwCfg()
    fw.add_file("etc/vmcoreinfo", bytes(16), writable=True)
    fw.add_file("bootorder", b"/pci@i0cf8/*\0")
    fw.add_file("etc/acpi/tables", bytes(0x20000))
    assert [fw.select_of(n) for n in ("bootorder", "etc/acpi/tables", "etc/vmcoreinfo")] == [0x20, 0x21, 0x22]
    d = FwCfgDirectory.parse(fw.item(0x19))
    assert d.count == 3
    assert [(f.name, f.select, f.size) for f in d.files] == [
        ("bootorder", 0x20, 13), ("etc/acpi/tables", 0x21, 0x20000), ("etc/vmcoreinfo", 0x22, 16)]
    raw = fw.directory()
    assert raw[:4] == b"\0\0\0\x03" and raw[4:8] == b"\0\0\0\x0d" and raw[8:10] == b"\0\x20"  # big-endian
    assert fw.item(0x99) == b""
    with pytest.raises(UsageError):
        fw.add_file("bootorder", b"")
    with pytest.raises(UsageError):
        fw.add_file("x" * 56, b"")
    with pytest.raises(NotFoundError):
        fw.file("nope")


def test_guest_writes_are_checked() -> None:
    fw = FwCfg()
    seen: list[tuple[int, int]] = []
    fw.add_file("ro", bytes(8))
    fw.add_file("rw", bytes(8), writable=True, on_write=lambda o, n: seen.append((o, n)))
    with pytest.raises(UsageError, match="read-only"):
        fw.write("ro", 0, b"\1")
    with pytest.raises(UsageError, match="outside"):
        fw.write("rw", 4, bytes(5))
    fw.write("rw", 4, b"\1\2\3\4")
    assert bytes(fw.file("rw").data) == b"\0\0\0\0\1\2\3\4" and seen == [(4, 4)]


def test_dma_descriptors_in_guest_ram() -> None:
    mem, fw = ram(), FwCfg()
    fw.add_file("ro", b"hello world")
    fw.add_file("rw", bytes(4), writable=True)
    # read the directory with one select+read descriptor
    mem.write(0x5000, FwCfgDmaAccess.build({"control": (0x19 << 16) | DMA_CTL_SELECT | DMA_CTL_READ,
                                            "length": 4, "address": 0x5100}))
    assert fw.dma(mem, 0x5000) == 0
    assert mem.read(0x5000, 4) == bytes(4) and mem.read(0x5100, 4) == b"\0\0\0\x02"
    # a write into a read-only file sets the error bit and leaves the file alone
    mem.write(0x5200, b"HELLO")
    ctl = (fw.select_of("ro") << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE
    mem.write(0x5000, FwCfgDmaAccess.build({"control": ctl, "length": 5, "address": 0x5200}))
    assert fw.dma(mem, 0x5000) == DMA_CTL_ERROR
    assert int.from_bytes(mem.read(0x5000, 4), "big") == DMA_CTL_ERROR
    assert bytes(fw.file("ro").data) == b"hello world"
    # select + skip, then write, as firmware does for WRITE_POINTER
    dma_write_file(fw, mem, 0x6000, "rw", 2, b"\xaa\xbb")
    assert bytes(fw.file("rw").data) == b"\0\0\xaa\xbb"
    with pytest.raises(UsageError, match="error bit"):
        dma_write_file(fw, mem, 0x6000, "rw", 3, b"\xaa\xbb")


# -- layouts --------------------------------------------------------------------------------------

@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_fw_cfg_vmcoreinfo_record_round_trip(host: int, guest: int, size: int, paddr: int) -> None:
    rec = {"host_format": host, "guest_format": guest, "size": size, "paddr": paddr}
    raw = FwCfgVmcoreinfo.build(rec)
    assert raw == host.to_bytes(2, "little") + guest.to_bytes(2, "little") + size.to_bytes(4, "little") \
        + paddr.to_bytes(8, "little")
    assert {k: v for k, v in FwCfgVmcoreinfo.parse(raw).items() if not k.startswith("_")} == rec


@given(st.uuids())
def test_guid_little_endian_round_trip(guid: uuid.UUID) -> None:
    raw = GuidLE.build(guid)
    assert raw[:4] == guid.bytes[3::-1] and raw[8:] == guid.bytes[8:]
    assert GuidLE.parse(raw) == guid


def test_rfc_page_layouts() -> None:
    content = {"version": 0, "paddr": NOTE_PADDR, "size": NOTE_SIZE}
    for offset in (40, 36):
        page = vmcoreinfo_rfc_page(offset).build(
            {"suppressor": bytes(offset), "content": content, "tail": bytes(4096 - offset - 16)})
        assert len(page) == 4096
        assert page[offset : offset + 4] == bytes(4)
        assert int.from_bytes(page[offset + 4 : offset + 12], "little") == NOTE_PADDR
        assert int.from_bytes(page[offset + 12 : offset + 16], "little") == NOTE_SIZE
    assert VmcoreinfoRfcContent.sizeof() == 16


# -- RFC vmcoreinfo ---------------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [40, 36])
def test_rfc_device_end_to_end(offset: int) -> None:
    mem, dev = ram(), RfcVmcoreinfoDevice(offset)
    with pytest.raises(NotFoundError, match="not written"):
        dev.get(mem)
    _, _, fw = boot(mem, [dev])
    page = dev.address - offset
    written = RfcGuestDriver(mem).run(NOTE_PADDR, NOTE_SIZE, fw.acpi)
    assert written == page + offset
    raw = mem.read(page, 4096)
    assert raw[:offset] == bytes(offset)  # the suppressor is untouched
    parsed = vmcoreinfo_rfc_page(offset).parse(raw)
    assert (parsed.content.version, parsed.content.paddr, parsed.content.size) == (0, NOTE_PADDR, NOTE_SIZE)
    assert dev.get(mem) == (NOTE_PADDR, NOTE_SIZE)
    mem.write(page + offset, b"\1\0\0\0")
    with pytest.raises(FormatError, match="version 1"):
        dev.get(mem)
    dev.reset()
    assert dev.address == 0


def test_rfc_device_rejects_other_offsets() -> None:
    with pytest.raises(UsageError):
        RfcVmcoreinfoDevice(44)


def test_evaluate_addr_needs_a_linked_vcia() -> None:
    mem, dev = ram(), RfcVmcoreinfoDevice()
    _, build, fw = boot(mem, [dev])
    assert fw.acpi is not None
    table = fw.acpi.find("SSDT", "VMCOREIN")
    assert table is not None
    assert evaluate_addr(mem, table.address, "VCIA") == dev.address
    # before firmware patched it, VCIA is 0 and _STA says "absent": QEMU's own bytes
    unlinked = 0x7000000
    off = build.offsets["SSDT:VMCOREIN"]
    mem.write(unlinked, bytes(build.tables[off : off + table.length]))
    with pytest.raises(NotFoundError, match="VCIA is 0"):
        evaluate_addr(mem, unlinked, "VCIA")
    with pytest.raises(FormatError, match="Name"):
        evaluate_addr(mem, unlinked, "VGIA")
    linked = mem.read(table.address, table.length)
    add = linked.index(b"\x72VCIA")  # Add(VCIA, 40) in the ADDR method
    mem.write(unlinked, linked[:add] + b"\x72VCIX" + linked[add + 5 :])
    with pytest.raises(FormatError, match="no Add"):
        evaluate_addr(mem, unlinked, "VCIA")
    mem.write(unlinked, linked[: add + 5] + b"\x11" + linked[add + 6 :])  # not an integer opcode
    with pytest.raises(FormatError, match="opcode 0x11"):
        evaluate_addr(mem, unlinked, "VCIA")
    mem.write(unlinked + 4, (10).to_bytes(4, "little"))  # a length shorter than the header
    with pytest.raises(FormatError, match="10 bytes"):
        evaluate_addr(mem, unlinked, "VCIA")


def test_rfc_guest_driver_without_ssdt() -> None:
    mem, dev = ram(), VmgenidDevice()
    _, _, fw = boot(mem, [dev])
    with pytest.raises(NotFoundError, match="VMCOREIN"):
        RfcGuestDriver(mem).run(NOTE_PADDR, NOTE_SIZE, fw.acpi)
    with pytest.raises(NotFoundError, match="VMCOREIN"):
        RfcGuestDriver(mem).run(NOTE_PADDR, NOTE_SIZE, None)


# -- upstream vmcoreinfo ------------------------------------------------------------------------------

def test_upstream_device_state_machine() -> None:
    fw, dev = FwCfg(), UpstreamVmcoreinfoDevice()
    dev.add_fw_cfg(fw)
    assert dev.record() == {"host_format": 1, "guest_format": 0, "size": 0, "paddr": 0}
    assert not dev.has_vmcoreinfo
    rec = {"host_format": 0, "guest_format": 1, "size": NOTE_SIZE, "paddr": NOTE_PADDR}
    full = FwCfgVmcoreinfo.build(rec)
    fw.write("etc/vmcoreinfo", 0, full[:8])  # a partial write does not count
    assert not dev.has_vmcoreinfo
    fw.write("etc/vmcoreinfo", 8, full[8:])
    assert not dev.has_vmcoreinfo
    fw.write("etc/vmcoreinfo", 0, full)
    assert dev.has_vmcoreinfo
    fw.write("etc/vmcoreinfo", 0, full[:2] + b"\0\0" + full[4:])  # guest_format NONE switches it off
    assert not dev.has_vmcoreinfo
    dev.reset()
    assert dev.record()["host_format"] == 1 and not dev.has_vmcoreinfo


@pytest.mark.parametrize("via_dma", [True, False])
def test_linux_writer(via_dma: bool) -> None:
    mem, fw, dev = ram(), FwCfg(), UpstreamVmcoreinfoDevice()
    dev.add_fw_cfg(fw)
    writer = LinuxFwCfgWriter(fw, mem, 0x9000) if via_dma else LinuxFwCfgWriter(fw)
    writer.write(NOTE_PADDR, NOTE_SIZE)
    assert dev.record() == {"host_format": 0, "guest_format": 1, "size": NOTE_SIZE, "paddr": NOTE_PADDR}
    assert dev.has_vmcoreinfo
    if via_dma:
        assert mem.read(0x9000 + 32, 16) == bytes(dev.state)  # the record the driver sent from RAM


def test_linux_writer_cannot_write_the_rfc_blob() -> None:
    mem, dev = ram(), RfcVmcoreinfoDevice()
    fw, _, _ = boot(mem, [dev])
    with pytest.raises(UsageError):
        LinuxFwCfgWriter(fw, mem, 0x9000).write(NOTE_PADDR, NOTE_SIZE)
    with pytest.raises(UsageError, match="read-only"):
        LinuxFwCfgWriter(fw).write(NOTE_PADDR, NOTE_SIZE)


# -- vmgenid ------------------------------------------------------------------------------------------

def test_vmgenid_guid_storage_and_update() -> None:
    dev = VmgenidDevice("00112233-4455-6677-8899-AABBCCDDEEFF")
    assert bytes(dev.blob[40:56]) == bytes.fromhex("33221100554477668899AABBCCDDEEFF")
    assert bytes(dev.blob[:40]) == bytes(40) and len(dev.blob) == 4096
    assert VmgenidPage.parse(dev.blob).guid == uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    assert dev.query()["guid"] == "00112233-4455-6677-8899-aabbccddeeff"
    mem = ram()
    boot(mem, [dev])
    dev.set_guid("324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87", mem)
    assert mem.read(dev.address, 16).hex() == "af6e4e32d1d1f64bbf41b9bb6c91fb87"  # as seen on QEMU 7.2
    assert VmgenidDevice().guid != VmgenidDevice().guid  # "auto"
