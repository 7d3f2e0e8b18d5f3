"""The truth sidecar comes from what the actors did.  The ACPI part is checked two ways: against
the bytes the firmware left in guest RAM (independent of any reader), and the real ACPI reader
against it ("the reader finds what the firmware placed")."""

from __future__ import annotations

import pytest

from vmci.firmware import acpi as reader
from vmci.formats import open_dump
from vmci.layouts.acpi import SdtHeader, checksum8, id_text
from vmci.producer.build import build
from vmci.producer.config import Scenario
from vmci.producer.scenario import generate
from vmci.producer.truth import acpi_truth

ACPI_CASES = [
    pytest.param("seabios", 0, "rfc", False, id="seabios-rsdp0-rfc"),
    pytest.param("seabios", 2, "rfc", True, id="seabios-rsdp2-rfc-vmgenid"),
    pytest.param("seabios", 0, "upstream", True, id="seabios-rsdp0-vmgenid"),
    pytest.param("seabios", 0, "none", False, id="seabios-fadt-only"),
    pytest.param("ovmf", 0, "rfc", True, id="ovmf-rfc-vmgenid"),
    pytest.param("ovmf", 2, "rfc", False, id="ovmf-rfc"),
    pytest.param("ovmf", 0, "none", False, id="ovmf-fadt-only"),
]


def reader_view(mem) -> dict[str, object]:
    """What vmci's ACPI reader finds, shaped like the truth's ``acpi`` section."""
    rsdp, _ = reader.find_rsdp(mem)
    assert rsdp is not None
    tables, _ = reader.list_tables(mem, rsdp)
    listed: dict[str, int] = {}
    for t in tables:
        listed.setdefault(f"{t.signature}:{t.oem_table_id}".rstrip(":"), t.address)
    return {"rsdp": rsdp.address, "rsdp_revision": rsdp.revision, "rsdt": rsdp.rsdt_address,
            "xsdt": rsdp.xsdt_address, "tables": listed}


@pytest.mark.parametrize(("firmware", "rsdp_revision", "device", "vmgenid"), ACPI_CASES)
def test_acpi_truth_is_what_the_firmware_left_in_ram(firmware, rsdp_revision, device, vmgenid) -> None:
    """No reader involved: each address in the truth holds the named, checksummed table."""
    g = build(Scenario(seed=21, ram="32M", firmware=firmware, rsdp_revision=rsdp_revision, device=device,
                       vmgenid=vmgenid, fadt_revision=3 if rsdp_revision else 1))
    t = acpi_truth(g.acpi_tables)
    ovmf = firmware == "ovmf"
    assert t["rsdp_revision"] == (2 if ovmf else rsdp_revision)
    assert g.mem.read(t["rsdp"], 8) == b"RSD PTR " and checksum8(g.mem.read(t["rsdp"], 20)) == 0
    assert int.from_bytes(g.mem.read(t["rsdp"] + 16, 4), "little") == t["rsdt"]
    assert (t["xsdt"] is not None) == (t["rsdp_revision"] >= 2)
    roots = [("RSDT", t["rsdt"], 4)] + ([("XSDT", t["xsdt"], 8)] if t["xsdt"] else [])
    for sig, addr, size in roots:
        hdr = SdtHeader.parse(g.mem.read(addr, 36))
        raw = g.mem.read(addr, hdr.length)
        assert hdr.signature == sig.encode() and checksum8(raw) == 0
        entries = [int.from_bytes(raw[i : i + size], "little") for i in range(36, hdr.length, size)]
        assert entries == list(t["tables"].values())
    expected = ["FACP:BXPCFACP"] + (["SSDT:VMCOREIN"] if device == "rfc" else []) + (
        ["SSDT:VMGENID"] if vmgenid else [])
    assert list(t["tables"]) == expected
    for key, addr in t["tables"].items():
        hdr = SdtHeader.parse(g.mem.read(addr, 36))
        assert f"{hdr.signature.decode()}:{id_text(hdr.oem_table_id)}" == key
        assert checksum8(g.mem.read(addr, hdr.length)) == 0
    # SeaBIOS: QEMU's blob in place, at the builder's offsets; OVMF: fresh copies outside the blob
    base = g.firmware.allocations["etc/acpi/tables"].address
    inside = [base <= a < base + len(g.acpi.tables) for a in t["tables"].values()]
    assert inside == [not ovmf] * len(inside)
    if not ovmf:
        assert t["tables"] == {e.key: base + e.offset for e in g.acpi.entries}
        assert t["rsdp"] == g.firmware.allocations["etc/acpi/rsdp"].address


@pytest.mark.parametrize(("firmware", "rsdp_revision", "device", "vmgenid"), ACPI_CASES)
def test_reader_finds_what_the_firmware_placed(tmp_path, firmware, rsdp_revision, device, vmgenid) -> None:
    t = generate(Scenario(seed=22, ram="32M", firmware=firmware, rsdp_revision=rsdp_revision, device=device,
                          vmgenid=vmgenid), tmp_path / "d.kdump", "kdump")
    with open_dump(t.path) as d:
        assert reader_view(d.memory) == t["acpi"]
        for table_id, section in (("VMCOREIN", t["device"]), ("VMGENID", t["vmgenid"])):
            found, _ = reader.find_ssdt(d.memory, table_id)
            want = section.get("ssdt") if section else None
            assert (found.address if found else None) == want
            if found is not None:
                assert found.checksum_ok and t["acpi"]["tables"][f"SSDT:{table_id}"] == want
                value, _ = reader.leading_name_dword(found)
                assert value == section["page"]  # VCIA/VGIA: where the firmware put the page


@pytest.mark.parametrize("firmware", ["seabios", "ovmf"])
def test_truth_follows_the_after_boot_faults(tmp_path, firmware) -> None:
    t = generate(Scenario(seed=23, ram="32M", firmware=firmware, vmgenid=True, rsdp_revision=2,
                          faults=["missing-ssdt"]), tmp_path / "d.elf", "elf")
    assert "SSDT:VMCOREIN" not in t["acpi"]["tables"] and "SSDT:VMGENID" in t["acpi"]["tables"]
    assert t["device"]["ssdt"] is not None  # where it was before the fault
    with open_dump(t.path) as d:
        assert reader_view(d.memory) == t["acpi"]


def test_ovmf_installs_a_suppressor_that_passes_its_probe(tmp_path) -> None:
    t = generate(Scenario(seed=24, ram="32M", firmware="ovmf", faults=["suppressor-acpi-header"]),
                 tmp_path / "d.elf", "elf")
    assert "OEMV:SUPPRESS" in t["acpi"]["tables"]
    with open_dump(t.path) as d:
        assert reader_view(d.memory) == t["acpi"]
