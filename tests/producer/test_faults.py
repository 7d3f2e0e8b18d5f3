"""Every fault is applied by its actor and shows in the bytes of the produced dump."""

from __future__ import annotations

import pytest

from vmci.errors import UsageError
from vmci.firmware import acpi as reader
from vmci.formats import open_dump
from vmci.layouts.acpi import checksum8
from vmci.layouts.fw_cfg import FwCfgVmcoreinfo, VmcoreinfoRfcContent
from vmci.producer.build import build
from vmci.producer.config import Scenario
from vmci.producer.faults import FAULTS, STAGES
from vmci.producer.firmware import ovmf_table_size
from vmci.producer.scenario import generate


def dump(tmp_path, fmt="elf", **keys):
    keys.setdefault("ram", "32M")
    keys.setdefault("seed", 7)
    t = generate(Scenario(**keys), tmp_path / f"f.{fmt}", fmt)
    return t, open_dump(t.path)


def content(t, d, offset=40):
    page = t["device"]["page"]
    return VmcoreinfoRfcContent.parse(d.memory.read(page + offset, 16))


def test_registry_is_complete() -> None:
    assert set(FAULTS) == {
        "nonzero-suppressor",
        "suppressor-acpi-header",
        "unknown-version",
        "paddr-outside-ram",
        "size-oversize",
        "size-undersize",
        "wrong-note-name",
        "wrong-note-type",
        "truncated-note",
        "rfc-offset-36",
        "bad-acpi-checksum",
        "missing-ssdt",
        "stale-note",
        "no-device",
        "vmcoreinfo-lost",
    }
    assert all(f.stage in STAGES for f in FAULTS.values())


def test_nonzero_suppressor(tmp_path) -> None:
    t, d = dump(tmp_path, faults=["nonzero-suppressor"])
    page = t["device"]["page"]
    assert d.memory.read(page, 40) == bytes(range(0xA0, 0xC8))
    assert content(t, d).version == 0 and t["dump"]["guest_note"]["appended"]
    assert t["faults"][0]["stage"] == "qemu-device"


@pytest.mark.parametrize("firmware", ["seabios", "ovmf"])
def test_suppressor_acpi_header(tmp_path, firmware) -> None:
    t, d = dump(tmp_path, firmware=firmware, faults=["suppressor-acpi-header"])
    head = d.memory.read(t["device"]["page"], 40)
    assert head[:4] == b"OEMV" and int.from_bytes(head[4:8], "little") == 36 and checksum8(head[:36]) == 0
    assert head[36:] == bytes(4)
    assert ovmf_table_size(head) == 36  # OVMF takes it for a table: what the suppressor prevents
    assert reader.ovmf_probe(head) is not None  # and the reader predicts so
    if firmware == "ovmf":  # OVMF's second pass installed it as a table
        assert "OEMV" in [sig for sig, _ in t["firmware"]["installed"]]


@pytest.mark.parametrize("device", ["rfc", "upstream"])
def test_unknown_version(tmp_path, device) -> None:
    t, d = dump(tmp_path, device=device, faults=["unknown-version"])
    if device == "rfc":
        assert content(t, d).version == 1
        assert "unknown vmcoreinfo memory version" in t["dump"]["guest_note"]["warning"]
    else:
        assert FwCfgVmcoreinfo.parse(t.fw_cfg_record).guest_format == 2
        assert "unsupported: 2" in t["dump"]["guest_note"]["warning"]
    assert [n.name for n in d.notes] == ["CORE", "CORE", "QEMU", "QEMU"]


def test_paddr_outside_ram(tmp_path) -> None:
    t, d = dump(tmp_path, faults=["paddr-outside-ram"])
    c = content(t, d)
    assert not d.memory.contains(c.paddr) and c.paddr == (32 << 20) + 0x100000
    # QEMU reads unassigned memory as zeros: a 12-byte null note is appended
    assert t["dump"]["guest_note"]["appended"] and t["dump"]["guest_note"]["name"] == ""
    assert [n.name for n in d.notes] == ["CORE", "CORE", "QEMU", "QEMU"]
    assert not t.expected("address-blob")["found"] and t.expected("memory-scan")["found"]


@pytest.mark.parametrize(
    ("fault", "size", "warning"),
    [
        ("size-oversize", (1 << 20) + 0x1000, "size is invalid"),
        ("size-undersize", 8, "size is invalid"),
        ("truncated-note", 64, "Invalid guest note header"),
    ],
)
def test_registered_sizes(tmp_path, fault, size, warning) -> None:
    t, d = dump(tmp_path, fmt="kdump", faults=[fault])
    assert content(t, d).size == size
    assert warning in t["dump"]["guest_note"]["warning"]
    assert "vmcoreinfo_text" not in d.facts and d.notes[-1].name == "QEMU"
    t2, d2 = dump(tmp_path, fmt="kdump", device="upstream", faults=[fault])
    assert FwCfgVmcoreinfo.parse(t2.fw_cfg_record).size == size and d2.notes[-1].name == "QEMU"


def test_wrong_note_name(tmp_path) -> None:
    t, d = dump(tmp_path, fmt="kdump", faults=["wrong-note-name"])
    assert d.notes[-1].name == "VMCOREINFX"  # QEMU copies whatever note is there
    assert "vmcoreinfo_text" not in d.facts and d.facts["phys_base"] == 0
    assert d.memory.read(t["vmcoreinfo"]["note_paddr"] + 12, 11) == b"VMCOREINFX\0"
    assert not t.expected("memory-scan")["found"]


def test_wrong_note_type(tmp_path) -> None:
    _, d = dump(tmp_path, fmt="kdump", faults=["wrong-note-type"])
    assert (d.notes[-1].name, d.notes[-1].type) == ("VMCOREINFO", 1)
    assert d.facts["vmcoreinfo_text"].startswith(b"OSRELEASE=")  # the name still matches for QEMU


def test_rfc_offset_36(tmp_path) -> None:
    t, d = dump(tmp_path, faults=["rfc-offset-36"])
    page = t["device"]["page"]
    assert t["device"]["blob"] == page + 36 and t.addr_blob == (page + 36).to_bytes(8, "little")
    c = content(t, d, 36)
    assert (c.version, c.paddr) == (0, t["vmcoreinfo"]["note_paddr"])
    ssdt, _ = reader.find_ssdt(d.memory, "VMCOREIN")
    assert ssdt is not None and b"\x72VCIA\x0a\x24" in ssdt.aml  # Add(VCIA, 0x24)
    with pytest.raises(UsageError):
        build(Scenario(ram="32M", device="upstream", faults=["rfc-offset-36"]))


def test_bad_acpi_checksum(tmp_path) -> None:
    t, d = dump(tmp_path, faults=["bad-acpi-checksum"])
    ssdt, _ = reader.find_ssdt(d.memory, "VMCOREIN")
    # the truth says where the firmware put the table (not where a reader found it)
    assert ssdt is not None and not ssdt.checksum_ok and ssdt.address == t["device"]["ssdt"]
    assert t["acpi"]["tables"]["SSDT:VMCOREIN"] == t["device"]["ssdt"]  # still listed
    assert checksum8(d.memory.read(t["device"]["ssdt"], ssdt.length)) != 0
    assert not t.expected("acpi")["found"] and t.expected("address-blob")["found"]


@pytest.mark.parametrize("rsdp_revision", [0, 2])
def test_missing_ssdt(tmp_path, rsdp_revision) -> None:
    t, d = dump(tmp_path, rsdp_revision=rsdp_revision, vmgenid=True, faults=["missing-ssdt"])
    assert reader.find_ssdt(d.memory, "VMCOREIN")[0] is None
    assert reader.find_ssdt(d.memory, "VMGENID")[0] is not None
    assert d.memory.read(t["device"]["ssdt"], 36) == bytes(36)
    assert content(t, d).paddr == t["vmcoreinfo"]["note_paddr"]  # the driver ran before
    rsdp, _ = reader.find_rsdp(d.memory)
    tables, _ = reader.list_tables(d.memory, rsdp)
    assert all(tb.checksum_ok for tb in tables)
    assert {f"{tb.signature}:{tb.oem_table_id}": tb.address for tb in tables} == t["acpi"]["tables"]
    assert "SSDT:VMCOREIN" not in t["acpi"]["tables"] and rsdp.address == t["acpi"]["rsdp"]
    assert "removed from the RSDT" + ("/XSDT" if rsdp_revision else "") in t["faults"][0]["detail"]


def test_stale_note(tmp_path) -> None:
    t, d = dump(tmp_path, faults=["stale-note"])
    stale = t["stale_note"]
    assert stale["kaslr_offset"] == 0 and stale["phys_base"] == t["kernel"]["crashkernel"][0] - 0x1000000
    ck = t["kernel"]["crashkernel"]
    assert ck[0] <= stale["note_paddr"] < ck[0] + ck[1]
    text = d.memory.read(stale["desc_paddr"], stale["text_size"])
    assert b"KERNELOFFSET=0\n" in text
    assert t.expected("memory-scan")["notes_in_ram"] == [t["vmcoreinfo"]["note_paddr"], stale["note_paddr"]]
    assert d.notes[-1].desc != text  # the device still points at the running kernel's note


def test_no_device(tmp_path) -> None:
    t, d = dump(tmp_path, faults=["no-device"])
    assert t["device"] == {"kind": "none"} and t.addr_blob is None
    assert reader.find_ssdt(d.memory, "VMCOREIN")[0] is None
    assert d.notes[-1].name == "QEMU"


def test_faults_need_their_actor() -> None:
    for fault in ("nonzero-suppressor", "suppressor-acpi-header", "bad-acpi-checksum"):
        with pytest.raises(UsageError):
            build(Scenario(ram="32M", device="upstream", faults=[fault]))
    with pytest.raises(UsageError):
        build(Scenario(ram="32M", device="none", faults=["size-oversize"]))


def test_vmcoreinfo_lost(tmp_path) -> None:
    t, d = dump(tmp_path, device="none", faults=["vmcoreinfo-lost"])
    note, data = t["vmcoreinfo"]["note_paddr"], t["vmcoreinfo"]["data_paddr"]
    assert d.memory.read(note, 4096) == bytes(4096) and d.memory.read(data, 4096) == bytes(4096)
    assert not t.expected("memory-scan")["found"] and t.expected("memory-scan")["notes_in_ram"] == []
    assert t["faults"][0]["stage"] == "after-boot"


@pytest.mark.parametrize("device", ["rfc", "upstream"])
def test_vmcoreinfo_lost_with_a_device(tmp_path, device) -> None:
    """QEMU still appends the zeroed note (a 12-byte nameless one), which carries no text: no
    strategy can find one, whatever the device points at."""
    t, d = dump(tmp_path, device=device, faults=["vmcoreinfo-lost"])
    note = t["dump"]["guest_note"]
    assert note["appended"] and note["name"] == "" and note["data"] == 12
    assert not any(e["found"] for e in t["expected"].values()), t["expected"]
    assert t.expected("address-blob" if device == "rfc" else "fw-cfg-record")["applicable"]
    assert d.memory.read(t["vmcoreinfo"]["note_paddr"], 12) == bytes(12)
