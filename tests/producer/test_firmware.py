"""Firmware executing the table-loader script: SeaBIOS-like and OVMF-like placement, pointers
patched in guest RAM, addresses written back into QEMU's fw_cfg files, and refusals."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmci.core.memory import Range, SparseMemory
from vmci.errors import FormatError, UsageError
from vmci.layouts.acpi import SdtHeader, checksum8
from vmci.layouts.fw_cfg import FwCfgDmaAccess
from vmci.layouts.table_loader import (
    CMD_ADD_CHECKSUM,
    CMD_ADD_POINTER,
    CMD_ALLOCATE,
    CMD_WRITE_POINTER,
    LoaderEntry,
    build_entry,
    parse_script,
)
from vmci.producer.acpi_tables import LOADER_FILE, build_acpi, install_acpi
from vmci.producer.devices import RfcVmcoreinfoDevice, VmgenidDevice
from vmci.producer.firmware import FSEG_END, FSEG_START, Firmware, boot, ovmf_table_size
from vmci.producer.fw_cfg import FwCfg

RAM = 0x8000000  # 128 MiB
SEED_GUID = "00112233-4455-6677-8899-AABBCCDDEEFF"
SEED_GUID_LE = bytes.fromhex("33221100554477668899AABBCCDDEEFF")


def ram() -> SparseMemory:
    return SparseMemory([Range(0, RAM)])


def le(mem: SparseMemory, addr: int, n: int) -> int:
    return int.from_bytes(mem.read(addr, n), "little")


def tables_in_ram(mem: SparseMemory, base: int, offsets: dict[str, int]) -> dict[str, bytes]:
    out = {}
    for key, off in offsets.items():
        if key == "FACS":
            continue
        length = SdtHeader.parse(mem.read(base + off, 36)).length
        out[key] = mem.read(base + off, length)
    return out


@pytest.mark.parametrize("offset", [40, 36])
def test_seabios_links_vmcoreinfo(offset: int) -> None:
    mem, dev = ram(), RfcVmcoreinfoDevice(offset)
    fw_cfg, build, result = boot(mem, [dev])
    page = result.allocations["etc/vmcoreinfo"].address
    assert page % 4096 == 0 and page + 4096 == RAM  # SeaBIOS ZoneHigh: top of low RAM, top-down
    # QEMU's copy of the address blob holds page + offset, little-endian
    assert bytes(fw_cfg.file("etc/vmcoreinfo-addr").data) == (page + offset).to_bytes(8, "little")
    assert dev.address == page + offset
    # the installed SSDT's VCIA holds the page itself, and every table checksums
    base = result.allocations["etc/acpi/tables"].address
    tables = tables_in_ram(mem, base, build.offsets)
    assert all(checksum8(t) == 0 for t in tables.values())
    assert int.from_bytes(tables["SSDT:VMCOREIN"][42:46], "little") == page
    assert mem.read(page, 4096) == bytes(4096)  # the blob, suppressor included, is all zero
    # RSDP in the F-segment, pointing at the RSDT in RAM
    rsdp = result.rsdp_address
    assert rsdp is not None and FSEG_START <= rsdp < FSEG_END and rsdp % 16 == 0
    assert checksum8(mem.read(rsdp, 20)) == 0
    assert le(mem, rsdp + 16, 4) == base + build.offsets["RSDT"]
    # FADT -> FACS / DSDT
    fadt = base + build.offsets["FACP"]
    assert le(mem, fadt + 36, 4) == base and le(mem, fadt + 40, 4) == base + 64


def test_seabios_links_vmgenid_like_seed_000() -> None:
    mem, dev = ram(), VmgenidDevice(SEED_GUID)
    fw_cfg, build, result = boot(mem, [dev])
    page = result.allocations["etc/vmgenid_guid"].address
    assert page == 0x7FFF000  # what QEMU 7.2 + SeaBIOS gives a 128 MiB guest
    assert bytes(fw_cfg.file("etc/vmgenid_addr").data) == (page + 40).to_bytes(8, "little")
    assert mem.read(page + 40, 16) == SEED_GUID_LE
    assert mem.read(page, 40) == bytes(40)
    base = result.allocations["etc/acpi/tables"].address
    ssdt = base + build.offsets["SSDT:VMGENID"]
    assert le(mem, ssdt + 42, 4) == page
    assert checksum8(mem.read(ssdt, 0xCA)) == 0
    assert dev.query() == {"guid": "00112233-4455-6677-8899-aabbccddeeff"}


def test_rsdp_revision_2_under_seabios() -> None:
    mem = ram()
    _, build, result = boot(mem, [RfcVmcoreinfoDevice()], rsdp_revision=2, fadt_revision=3)
    rsdp = result.rsdp_address
    assert rsdp is not None
    raw = mem.read(rsdp, 36)
    assert checksum8(raw[:20]) == 0 and checksum8(raw) == 0
    base = result.allocations["etc/acpi/tables"].address
    assert le(mem, rsdp + 24, 8) == base + build.offsets["XSDT"]
    xsdt = mem.read(base + build.offsets["XSDT"], 36 + 16)
    assert checksum8(xsdt) == 0
    fadt = base + build.offsets["FACP"]
    assert le(mem, fadt + 140, 8) == base + 64  # X_DSDT patched too


def test_seabios_log_has_ovmf_message_shapes() -> None:
    _, _, result = boot(ram(), [VmgenidDevice(SEED_GUID)])
    alloc = re.compile(r'ProcessCmdAllocate: File="etc/vmgenid_guid" Alignment=0x1000 Zone=1 Size=0x1000 '
                       r"Address=0x[0-9A-F]+$")
    assert any(alloc.match(line) for line in result.log)
    assert 'ProcessCmdWritePointer: PointerFile="etc/vmgenid_addr" PointeeFile="etc/vmgenid_guid" ' \
           "PointerOffset=0x0 PointerSize=8" in result.log
    assert 'ProcessCmdAddChecksum: File="etc/acpi/rsdp" ResultOffset=0x8 Start=0x0 Length=0x14' in result.log


def test_ovmf_pages_probe_and_install() -> None:
    mem, vmci, vgen = ram(), RfcVmcoreinfoDevice(), VmgenidDevice(SEED_GUID)
    fw_cfg, _build, result = boot(mem, [vgen, vmci], flavor="ovmf", rsdp_revision=2)
    allocs = result.allocations
    assert all(a.address % 4096 == 0 and a.span % 4096 == 0 for a in allocs.values())
    page = allocs["etc/vmcoreinfo"].address
    assert bytes(fw_cfg.file("etc/vmcoreinfo-addr").data) == (page + 40).to_bytes(8, "little")
    assert mem.read(allocs["etc/vmgenid_guid"].address, 40) == bytes(40)
    assert vgen.address == allocs["etc/vmgenid_guid"].address + 40
    assert mem.read(vgen.address, 16) == SEED_GUID_LE
    # the page blobs fail the header probe thanks to the suppressor and are kept; the rest is freed
    assert allocs["etc/vmcoreinfo"].opaque and not allocs["etc/vmcoreinfo"].freed
    assert allocs["etc/vmgenid_guid"].opaque
    assert allocs["etc/acpi/tables"].freed and allocs["etc/acpi/rsdp"].freed
    assert any(line.startswith('Process2ndPassCmdAddPointer: checking for ACPI header in "etc/vmcoreinfo"')
               and line.endswith("not found; marking fw_cfg blob as opaque") for line in result.log)
    assert "InstallQemuFwCfgTables: installed 5 tables" in result.log
    assert [s for s, _ in result.installed] == ["FACS", "DSDT", "FACP", "SSDT", "SSDT"]
    # the installed copies: VCIA = page, FADT repointed at the DSDT copy, new RSDP rev 2 off the F-segment
    copies = dict(result.installed[:3])
    ssdt_copies = [a for s, a in result.installed if s == "SSDT"]
    vcia = [le(mem, a + 42, 4) for a in ssdt_copies if mem.read(a + 16, 8) == b"VMCOREIN"]
    assert vcia == [page]
    assert le(mem, copies["FACP"] + 40, 4) == copies["DSDT"]
    assert le(mem, copies["FACP"] + 36, 4) == copies["FACS"]
    assert checksum8(mem.read(copies["FACP"], 116)) == 0
    rsdp = result.rsdp_address
    assert rsdp is not None and not FSEG_START <= rsdp < FSEG_END and rsdp % 16 == 0
    assert mem.read(rsdp, 8) == b"RSD PTR " and checksum8(mem.read(rsdp, 36)) == 0
    # condensed WRITE_POINTERs saved for S3, as in seed 000
    sel = fw_cfg.select_of("etc/vmgenid_addr")
    assert (sel, 0, 8, vgen.address) in result.write_pointers
    assert any(line.startswith(f"SaveCondensedWritePointerToS3Context: 0x{sel:04X}/[0x00000000+8] := ")
               for line in result.log)


def test_ovmf_s3_resume_restores_the_address() -> None:
    mem, dev = ram(), VmgenidDevice(SEED_GUID)
    fw_cfg = FwCfg()
    install_acpi(fw_cfg, build_acpi([dev]))
    dev.add_fw_cfg(fw_cfg)
    firmware = Firmware(mem, fw_cfg, flavor="ovmf")
    firmware.run()
    addr = dev.address
    dev.reset()  # QEMU zeroes the blob on reset (S3 resume goes through reset)
    assert dev.address == 0
    firmware.s3_resume()
    assert dev.address == addr


def test_write_pointer_uses_a_real_dma_descriptor() -> None:
    mem, dev = ram(), RfcVmcoreinfoDevice()
    fw_cfg = FwCfg()
    install_acpi(fw_cfg, build_acpi([dev]))
    dev.add_fw_cfg(fw_cfg)
    Firmware(mem, fw_cfg, scratch=0x6000).run()
    desc = FwCfgDmaAccess.parse(mem.read(0x6000, 16))
    assert desc.control == 0  # QEMU clears control on success
    assert le(mem, desc.address, 8) == dev.address  # the data the firmware sent


def machine(flavor: str = "seabios") -> tuple[SparseMemory, FwCfg, Firmware]:
    mem, dev = ram(), RfcVmcoreinfoDevice()
    fw_cfg = FwCfg()
    install_acpi(fw_cfg, build_acpi([dev]))
    dev.add_fw_cfg(fw_cfg)
    return mem, fw_cfg, Firmware(mem, fw_cfg, flavor=flavor)


def script_with(fw_cfg: FwCfg, extra: bytes) -> bytes:
    return bytes(fw_cfg.file(LOADER_FILE).data) + extra


def test_unknown_commands_are_skipped() -> None:
    _mem, fw_cfg, fw = machine("ovmf")
    result = fw.run(script_with(fw_cfg, bytes(128) + build_entry(7, raw=b"x" * 124)))
    assert result.log.count("InstallQemuFwCfgTables: unknown loader command: 0x0") == 1
    assert "InstallQemuFwCfgTables: unknown loader command: 0x7" in result.log


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (build_entry(CMD_ADD_POINTER, dest_file="etc/acpi/tables", src_file="etc/vmcoreinfo",
                     offset=0, size=3), "bad pointer"),
        (build_entry(CMD_ADD_POINTER, dest_file="etc/acpi/tables", src_file="etc/vmcoreinfo",
                     offset=0x20000 - 2, size=4), "bad pointer"),
        (build_entry(CMD_ADD_POINTER, dest_file="etc/acpi/tables", src_file="nope", offset=0, size=4),
         "not allocated"),
        (build_entry(CMD_ADD_CHECKSUM, file="etc/vmcoreinfo", offset=0, start=4000, length=200),
         "checksum range"),
        (build_entry(CMD_WRITE_POINTER, dest_file="etc/vmcoreinfo", src_file="etc/vmcoreinfo",
                     dst_offset=0, src_offset=40, size=8), "error bit"),  # read-only file
        (build_entry(CMD_WRITE_POINTER, dest_file="etc/vmcoreinfo-addr", src_file="etc/vmcoreinfo",
                     dst_offset=4, src_offset=40, size=8), "error bit"),  # past the 8-byte file
        (build_entry(CMD_ALLOCATE, file="etc/vmcoreinfo", align=4096, zone=1), "twice"),
    ],
    ids=["size3", "past-end", "unallocated", "checksum-range", "wp-read-only", "wp-outside", "alloc-twice"],
)
def test_bad_commands_raise_with_the_command_offset(extra: bytes, match: str) -> None:
    _mem, fw_cfg, fw = machine()
    good = len(fw_cfg.file(LOADER_FILE).data)
    with pytest.raises(FormatError, match=match) as err:
        fw.run(script_with(fw_cfg, extra))
    assert err.value.offset == good


def test_alignment_rules_differ_by_flavor() -> None:
    fw_cfg = FwCfg()
    fw_cfg.add_file("blob", bytes(100))
    bad = build_entry(CMD_ALLOCATE, file="blob", align=48, zone=1)
    with pytest.raises(FormatError, match="alignment"):
        Firmware(ram(), fw_cfg).run(bad)
    big = build_entry(CMD_ALLOCATE, file="blob", align=8192, zone=1)
    assert Firmware(ram(), fw_cfg).run(big).allocations["blob"].address % 8192 == 0
    with pytest.raises(FormatError, match="alignment"):
        Firmware(ram(), fw_cfg, flavor="ovmf").run(big)


def test_missing_or_empty_files_are_skipped_and_bad_sizes_refused() -> None:
    fw_cfg = FwCfg()
    fw_cfg.add_file("empty", b"")
    script = build_entry(CMD_ALLOCATE, file="empty", align=16, zone=1) + build_entry(
        CMD_ALLOCATE, file="absent", align=16, zone=1)
    result = Firmware(ram(), fw_cfg).run(script)
    assert result.allocations == {} and len(result.log) == 2
    with pytest.raises(FormatError, match="multiple of 128"):
        Firmware(ram(), fw_cfg).run(script[:-1])
    with pytest.raises(UsageError):
        Firmware(ram(), fw_cfg, flavor="coreboot")


def test_fseg_must_be_ram() -> None:
    mem = SparseMemory([Range(0, 0xA0000), Range(0x100000, RAM - 0x100000)])
    fw_cfg = FwCfg()
    install_acpi(fw_cfg, build_acpi([]))
    with pytest.raises(UsageError, match="F-segment"):
        Firmware(mem, fw_cfg).run()


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz/_-.0123456789", min_size=1, max_size=55)
u32 = st.integers(min_value=0, max_value=(1 << 32) - 1)
u8 = st.integers(min_value=0, max_value=255)


@given(st.one_of(
    st.builds(lambda f, a, z: (CMD_ALLOCATE, {"file": f, "align": a, "zone": z}), names, u32, u8),
    st.builds(lambda d, s, o, n: (CMD_ADD_POINTER, {"dest_file": d, "src_file": s, "offset": o, "size": n}),
              names, names, u32, u8),
    st.builds(lambda f, o, s, n: (CMD_ADD_CHECKSUM, {"file": f, "offset": o, "start": s, "length": n}),
              names, u32, u32, u32),
    st.builds(lambda d, s, a, b, n: (CMD_WRITE_POINTER, {"dest_file": d, "src_file": s, "dst_offset": a,
                                                           "src_offset": b, "size": n}),
              names, names, u32, u32, u8),
))
def test_loader_entry_round_trip(cmd: tuple[int, dict[str, object]]) -> None:
    command, fields = cmd
    raw = build_entry(command, **fields)
    assert len(raw) == 128
    parsed = parse_script(raw)[0]
    assert parsed.command == command
    assert {k: parsed.body[k] for k in fields} == fields


def test_loader_entry_field_offsets() -> None:
    raw = build_entry(CMD_WRITE_POINTER, dest_file="etc/vmcoreinfo-addr", src_file="etc/vmcoreinfo",
                      dst_offset=0x11, src_offset=40, size=8)
    assert raw[:4] == b"\x04\0\0\0" and raw[4:23] == b"etc/vmcoreinfo-addr"
    assert raw[60:74] == b"etc/vmcoreinfo" and raw[23:60] == bytes(37)
    assert raw[116:120] == b"\x11\0\0\0" and raw[120:124] == b"\x28\0\0\0" and raw[124] == 8
    raw = build_entry(CMD_ALLOCATE, file="etc/acpi/tables", align=64, zone=1)
    assert raw[60:64] == b"\x40\0\0\0" and raw[64] == 1
    raw = build_entry(CMD_ADD_CHECKSUM, file="f", offset=9, start=1, length=2)
    assert raw[60:72] == b"\x09\0\0\0\x01\0\0\0\x02\0\0\0"
    assert LoaderEntry.sizeof() == 128
    with pytest.raises(UsageError):
        build_entry(CMD_ALLOCATE, file="x" * 56, align=1, zone=1)


# -- OVMF's own probe (the firmware's, independent of vmci's reader) ----------------------------

def test_ovmf_table_size_follows_ovmfs_rules() -> None:
    from vmci.producer.acpi_tables import build_facs, vmcoreinfo_ssdt

    ssdt, facs = vmcoreinfo_ssdt(), build_facs()
    assert ovmf_table_size(ssdt + bytes(100)) == len(ssdt)
    assert ovmf_table_size(facs) == 64  # the FACS needs no checksum, only its 64 bytes
    assert ovmf_table_size(facs[:40]) == 0  # fewer than 64 bytes remaining, and no SDT checksum
    assert ovmf_table_size(ssdt[:-1]) == 0  # Length beyond the remaining bytes
    assert ovmf_table_size(bytes(4096)) == 0  # Length 0 < 36: the zero suppressor's job
    broken = bytearray(ssdt)
    broken[9] ^= 1
    assert ovmf_table_size(bytes(broken)) == 0
    assert ovmf_table_size(b"") == 0


@given(st.binary(max_size=80), st.sampled_from([b"", b"FACS", b"SSDT"]), st.integers(0, 120), st.booleans())
def test_ovmf_probe_agrees_with_the_readers_prediction(
    tail: bytes, sig: bytes, length: int, fix: bool
) -> None:
    """Two separate codings of OVMF's rule: the firmware emulation's and the reader's."""
    from vmci.firmware.acpi import ovmf_probe

    data = bytearray(sig + length.to_bytes(4, "little") + tail if sig else tail)
    if fix and 9 < length <= len(data):  # make the claimed length sum to 0
        data[9] = (data[9] - checksum8(data[:length])) & 0xFF
    assert (ovmf_table_size(data) > 0) == (ovmf_probe(data) is not None)
