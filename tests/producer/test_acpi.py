"""QEMU-side ACPI: the seeds' SSDTs (checked with iasl and byte-for-byte against the seeds'
checksums), the plain tables, and the etc/acpi/tables + rsdp + table-loader trio."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vmci.errors import UsageError
from vmci.layouts.acpi import Facs, FadtV1, FadtX, RsdpV1, RsdpV2, Rsdt, SdtHeader, Xsdt, checksum8
from vmci.layouts.table_loader import (
    CMD_ADD_CHECKSUM,
    CMD_ADD_POINTER,
    CMD_ALLOCATE,
    CMD_WRITE_POINTER,
    ZONE_FSEG,
    ZONE_HIGH,
    parse_script,
)
from vmci.producer import acpi_tables as acpi
from vmci.producer.devices import RfcVmcoreinfoDevice, VmgenidDevice


def iasl_disassemble(table: bytes, tmp_path: Path, name: str) -> str:
    iasl = shutil.which("iasl")
    if iasl is None:
        pytest.skip("iasl is not installed (Debian package acpica-tools)")
    src = tmp_path / f"{name}.aml"
    src.write_bytes(table)
    run = subprocess.run([iasl, "-d", str(src)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    return (tmp_path / f"{name}.dsl").read_text()


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.interop
@pytest.mark.parametrize(("offset", "addend"), [(40, "0x28"), (36, "0x24")])
def test_vmcorein_ssdt_disassembles_like_the_seed(tmp_path: Path, offset: int, addend: str) -> None:
    dsl = squash(iasl_disassemble(acpi.vmcoreinfo_ssdt(offset, vcia=0x3FFFF000), tmp_path, "vmcorein"))
    assert 'DefinitionBlock ("", "SSDT", 1, "BOCHS ", "VMCOREIN", 0x00000001)' in dsl
    assert 'Compiler ID "BXPC"' in dsl
    assert "Name (VCIA, 0x3FFFF000) Scope (\\_SB) { Device (VMCI) {" in dsl
    assert 'Name (_HID, "QEMUVMCI")' in dsl
    assert "Method (_STA, 0, NotSerialized)" in dsl and "Local0 = 0x0F" in dsl
    assert "VCIA == Zero" in dsl and "Local0 = Zero" in dsl and "Return (Local0)" in dsl
    assert "Method (ADDR, 0, NotSerialized)" in dsl
    assert "Local0 = Package (0x02) {}" in dsl
    assert f"Local0 [Zero] = (VCIA + {addend})" in dsl
    assert "Local0 [One] = Zero" in dsl
    assert "_GPE" not in dsl  # the RFC device has no GPE method


@pytest.mark.interop
def test_vmgenid_ssdt_disassembles_like_the_seed(tmp_path: Path) -> None:
    dsl = squash(iasl_disassemble(acpi.vmgenid_ssdt(vgia=0x7FE5C000), tmp_path, "vmgenid"))
    assert 'DefinitionBlock ("", "SSDT", 1, "BOCHS ", "VMGENID", 0x00000001)' in dsl
    assert "Name (VGIA, 0x7FE5C000)" in dsl and "Device (VGEN)" in dsl
    assert 'Name (_HID, "QEMUVGID")' in dsl
    assert 'Name (_CID, "VM_Gen_Counter")' in dsl and 'Name (_DDN, "VM_Gen_Counter")' in dsl
    assert "Method (_STA, 0, NotSerialized)" in dsl and "VGIA == Zero" in dsl
    assert "Local0 [Zero] = (VGIA + 0x28)" in dsl
    assert "Method (\\_GPE._E05, 0, NotSerialized)" in dsl
    assert "Notify (\\_SB.VGEN, 0x80)" in dsl


@pytest.mark.interop
def test_dsdt_and_fadt_disassemble(tmp_path: Path) -> None:
    dsl = squash(iasl_disassemble(acpi.build_dsdt(), tmp_path, "dsdt"))
    assert "Device (PCI0)" in dsl and 'EisaId ("PNP0A03")' in dsl
    dsl = squash(iasl_disassemble(acpi.build_fadt(0x1000, 0x2000, revision=3), tmp_path, "facp"))
    assert "FACS Address : 00001000" in dsl and "DSDT Address : 00002000" in dsl


def test_ssdts_match_the_seeds_byte_for_byte() -> None:
    # lengths and checksums printed by iasl in the seeds, with the address values firmware patched in
    vmgenid = acpi.vmgenid_ssdt(vgia=0x7FE5C000)
    assert (len(vmgenid), vmgenid[9]) == (0xCA, 0x1D)  # seed 000
    vmcorein = acpi.vmcoreinfo_ssdt(vcia=0x3FFFF000)
    assert (len(vmcorein), vmcorein[9]) == (0x86, 0x5C)  # seed 001


@pytest.mark.parametrize("make", [acpi.vmcoreinfo_ssdt, acpi.vmgenid_ssdt])
def test_ssdt_named_dword_is_at_offset_42(make) -> None:  # type: ignore[no-untyped-def]
    table = make()
    assert checksum8(table) == 0
    assert table[36] == 0x08 and table[41] == 0x0C and table[42:46] == bytes(4)
    assert acpi.VCIA_TABLE_OFFSET == acpi.VGIA_TABLE_OFFSET == 42


def test_rsdp_revisions() -> None:
    r0 = acpi.build_rsdp(0x7FDE246)
    assert len(r0) == 20 and checksum8(r0) == 0
    p = RsdpV1.parse(r0)
    assert (p.signature, p.oem_id, p.revision, p.rsdt_address) == (b"RSD PTR ", b"BOCHS ", 0, 0x7FDE246)
    r2 = acpi.build_rsdp(0x1000, revision=2, xsdt_address=0x1_2345_6000)
    assert len(r2) == 36 and checksum8(r2[:20]) == 0 and checksum8(r2) == 0
    p2 = RsdpV2.parse(r2)
    assert (p2.revision, p2.length, p2.xsdt_address) == (2, 36, 0x1_2345_6000)


def test_plain_tables() -> None:
    rsdt = acpi.build_rsdt([0x100, 0x200])
    assert checksum8(rsdt) == 0 and Rsdt.parse(rsdt).entries == [0x100, 0x200]
    xsdt = acpi.build_xsdt([0x1_0000_0000])
    assert checksum8(xsdt) == 0 and Xsdt.parse(xsdt).entries == [0x1_0000_0000]
    facs = Facs.parse(acpi.build_facs())
    assert (facs.signature, facs.length) == (b"FACS", 64)
    f1 = acpi.build_fadt(0x40, 0x80)
    assert len(f1) == 116 and checksum8(f1) == 0
    p1 = FadtV1.parse(f1)
    assert (p1.header.signature, p1.header.revision, p1.firmware_ctrl, p1.dsdt) == (b"FACP", 1, 0x40, 0x80)
    f3 = acpi.build_fadt(0x40, 0x80, revision=3)
    assert len(f3) == 244 and checksum8(f3) == 0
    assert FadtX.parse(f3[116:]).x_dsdt == 0x80
    dsdt = acpi.build_dsdt()
    assert dsdt[:4] == b"DSDT" and checksum8(dsdt) == 0


def test_build_acpi_layout_and_script() -> None:
    vmci, vgen = RfcVmcoreinfoDevice(), VmgenidDevice("00112233-4455-6677-8899-AABBCCDDEEFF")
    build = acpi.build_acpi([vgen, vmci])
    off = build.offsets
    assert off["FACS"] == 0 and off["DSDT"] == 64
    assert off["FACS"] < off["DSDT"] < off["FACP"] < off["SSDT:VMGENID"] < off["SSDT:VMCOREIN"] < off["RSDT"]
    assert "XSDT" not in off and len(build.tables) == 0x20000 and len(build.rsdp) == 20
    tables = bytes(build.tables)
    for key in ("DSDT", "FACP", "SSDT:VMGENID", "SSDT:VMCOREIN", "RSDT"):
        hdr = SdtHeader.parse(tables[off[key] :])
        assert hdr.signature == key[:4].encode()
        assert tables[off[key] + 9] == 0  # QEMU leaves checksums to the firmware
    # pointers hold offsets inside their target blob until firmware adds the base
    ssdt = off["SSDT:VMCOREIN"]
    assert tables[ssdt + 42 : ssdt + 46] == bytes(4)
    assert Rsdt.parse(tables[off["RSDT"] :]).entries == [off["FACP"], off["SSDT:VMGENID"], ssdt]
    assert int.from_bytes(build.rsdp[16:20], "little") == off["RSDT"]

    cmds = parse_script(build.loader)
    assert len(build.loader) == 128 * len(cmds)
    allocs = [(c.body.file, c.body.align, c.body.zone) for c in cmds if c.command == CMD_ALLOCATE]
    assert allocs == [  # QEMU prepends ALLOCATEs: reverse call order, all first
        ("etc/acpi/rsdp", 16, ZONE_FSEG),
        ("etc/vmcoreinfo", 4096, ZONE_HIGH),
        ("etc/vmgenid_guid", 4096, ZONE_HIGH),
        ("etc/acpi/tables", 64, ZONE_HIGH),
    ]
    assert all(c.command == CMD_ALLOCATE for c in cmds[:4])
    wps = [c.body for c in cmds if c.command == CMD_WRITE_POINTER]
    assert [(w.dest_file, w.src_file, w.dst_offset, w.src_offset, w.size) for w in wps] == [
        ("etc/vmgenid_addr", "etc/vmgenid_guid", 0, 40, 8),
        ("etc/vmcoreinfo-addr", "etc/vmcoreinfo", 0, 40, 8),
    ]
    ptrs = [(c.body.dest_file, c.body.src_file, c.body.offset, c.body.size) for c in cmds
            if c.command == CMD_ADD_POINTER]
    assert ("etc/acpi/tables", "etc/vmcoreinfo", ssdt + 42, 4) in ptrs
    assert ("etc/acpi/tables", "etc/vmgenid_guid", off["SSDT:VMGENID"] + 42, 4) in ptrs
    assert ptrs[-1] == ("etc/acpi/rsdp", "etc/acpi/tables", 16, 4)
    sums = [(c.body.file, c.body.offset, c.body.start, c.body.length) for c in cmds
            if c.command == CMD_ADD_CHECKSUM]
    assert ("etc/acpi/tables", ssdt + 9, ssdt, 0x86) in sums
    assert sums[-1] == ("etc/acpi/rsdp", 8, 0, 20)


def test_build_acpi_revision_2_adds_xsdt() -> None:
    build = acpi.build_acpi([RfcVmcoreinfoDevice(36)], rsdp_revision=2, fadt_revision=3)
    off = build.offsets
    assert off["RSDT"] < off["XSDT"] and len(build.rsdp) == 36
    assert Xsdt.parse(bytes(build.tables[off["XSDT"] :])).entries == [off["FACP"], off["SSDT:VMCOREIN"]]
    cmds = parse_script(build.loader)
    sums = [(c.body.file, c.body.offset, c.body.length) for c in cmds if c.command == CMD_ADD_CHECKSUM]
    assert sums[-2:] == [("etc/acpi/rsdp", 8, 20), ("etc/acpi/rsdp", 32, 36)]
    wp = next(c.body for c in cmds if c.command == CMD_WRITE_POINTER)
    assert wp.src_offset == 36


def test_linker_rejects_bad_commands() -> None:
    linker = acpi.Linker()
    blob = bytearray(16)
    linker.alloc("a", blob, 16, ZONE_HIGH)
    with pytest.raises(UsageError):
        linker.alloc("a", blob, 16, ZONE_HIGH)
    with pytest.raises(UsageError):
        linker.alloc("b", bytearray(1), 3, ZONE_HIGH)
    with pytest.raises(UsageError):
        linker.add_pointer("a", 0, 3, "a", 0)
    with pytest.raises(UsageError):
        linker.add_pointer("a", 12, 8, "a", 0)
    with pytest.raises(UsageError):
        linker.add_pointer("a", 0, 4, "missing", 0)
    with pytest.raises(UsageError):
        linker.add_checksum("a", 0, 32, 1)
    with pytest.raises(UsageError):
        linker.write_pointer("x", 0, 8, "a", 17)
