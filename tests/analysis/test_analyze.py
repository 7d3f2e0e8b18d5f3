"""analyze(): the whole result on ELF and kdump dumps of RFC-device guests, against the JSON contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SMALL_KERNEL as SMALL
from conftest import note_dump, schema_errors

from vmci.analysis.analyze import analyze
from vmci.analysis.schema import ANALYZE_SCHEMA
from vmci.core.memory import Range, SparseMemory
from vmci.formats import open_dump
from vmci.producer.devices import RfcGuestDriver, RfcVmcoreinfoDevice, VmgenidDevice
from vmci.producer.firmware import boot
from vmci.producer.linux import PlacedVmcoreinfo, place_vmcoreinfo

MiB = 1 << 20
GUID = "00112233-4455-6677-8899-aabbccddeeff"


def guest(devices: bool = True) -> tuple[SparseMemory, RfcVmcoreinfoDevice, PlacedVmcoreinfo]:
    mem = SparseMemory([Range(0, 128 * MiB)])
    dev = RfcVmcoreinfoDevice()
    if devices:
        _, _, fw = boot(mem, [dev, VmgenidDevice(GUID)])
    placed = place_vmcoreinfo(mem, SMALL, 0x2345000, 0x2347000)
    if devices:
        RfcGuestDriver(mem).run(placed.note_paddr, placed.note_size, fw.acpi)
    return mem, dev, placed


def write(tmp_path: Path, mem: SparseMemory, text: bytes | None, kind: str = "elf") -> Path:
    return note_dump(tmp_path, mem, text, kind)


def test_validator_catches_contract_breaks() -> None:
    assert schema_errors({"schema": 2})
    bad = {"schema": 1, "dump": {"format": "elf", "arch": "x86_64", "ranges": [{"start": "0x0", "size": 1}]}}
    errs = schema_errors(bad)
    assert any("$.dump.ranges[0].start" in e for e in errs)
    assert any("'vmcoreinfo' is a required property" in e for e in errs)
    assert schema_errors(True, {"type": "integer"}) and not schema_errors(3, {"type": ["integer", "null"]})


def test_rfc_guest_elf_with_note_and_blob(tmp_path: Path) -> None:
    mem, dev, placed = guest()
    with open_dump(write(tmp_path, mem, placed.text)) as d:
        r = analyze(d, addr_blob=bytes(dev.addr_le)).to_dict()
    assert schema_errors(r) == []
    json.dumps(r)
    v = r["vmcoreinfo"]
    assert v["found"] and v["source"] == "elf-note" and v["text"] == placed.text.decode()
    assert v["values"]["OSRELEASE"] == SMALL.osrelease and v["key_values"]["PAGESIZE"] == 4096
    assert r["kaslr"] == {"kerneloffset": 0x1000000, "phys_base": 0, "method": "vmcoreinfo"}
    assert r["vmgenid"] == {"guid": GUID, "paddr": r["vmgenid"]["paddr"], "source": "acpi"}
    assert r["status"] == "PASS" and all(c["status"] == "PASS" for c in r["checks"])
    sources = {c["source"] for c in r["candidates"] if c["valid"]}
    assert sources == {"elf-note", "address-blob", "acpi"}
    assert {p["strategy"] for p in r["provenance"]} >= {"elf-note", "address-blob", "acpi", "choice"}
    assert all(isinstance(p["paddr"], int | type(None)) for p in r["provenance"])


def test_note_less_rfc_guest_found_through_acpi(tmp_path: Path) -> None:
    mem, _, placed = guest()
    with open_dump(write(tmp_path, mem, None)) as d:
        r = analyze(d).to_dict()
    assert schema_errors(r) == []
    assert r["vmcoreinfo"]["source"] == "acpi" and r["vmcoreinfo"]["paddr"] == placed.note_paddr
    names = {c["name"] for c in r["checks"]}
    assert "strategy:memory-scan" not in names  # no scan was needed
    assert "strategy:elf-note" not in names  # a dump without a note is not a fault
    assert r["status"] == "PASS"


def test_note_less_plain_guest_found_by_scan(tmp_path: Path) -> None:
    mem, _, placed = guest(devices=False)
    with open_dump(write(tmp_path, mem, None, "kdump")) as d:
        r = analyze(d).to_dict()
    assert schema_errors(r) == []
    assert r["vmcoreinfo"]["source"] == "memory-scan" and r["vmcoreinfo"]["paddr"] == placed.note_paddr
    assert r["vmgenid"] is None and r["status"] != "FAIL"


def test_nothing_found(tmp_path: Path) -> None:
    mem = SparseMemory([Range(0, 8 * MiB)])
    mem.write(0x1000, b"nothing here")
    with open_dump(write(tmp_path, mem, None)) as d:
        r = analyze(d).to_dict()
    assert schema_errors(r) == []
    assert not r["vmcoreinfo"]["found"] and r["status"] == "FAIL" and r["kaslr"]["method"] is None
    assert {"name": "vmcoreinfo-found", "status": "FAIL",
            "detail": "no strategy found a valid VMCOREINFO text"} in r["checks"]


def test_faulty_blob_is_a_failed_check(tmp_path: Path) -> None:
    mem, dev, placed = guest()
    mem.write(dev.address, (3).to_bytes(4, "little"))  # unknown version
    with open_dump(write(tmp_path, mem, placed.text)) as d:
        r = analyze(d, addr_blob=bytes(dev.addr_le)).to_dict()
    assert r["vmcoreinfo"]["found"] and r["status"] == "FAIL"
    failed = {c["name"]: c["detail"] for c in r["checks"] if c["status"] == "FAIL"}
    assert "unknown vmcoreinfo memory version 3" in failed["strategy:address-blob"]
    assert "strategy:acpi" in failed  # the device is present, its page is broken


def test_strategy_selection(tmp_path: Path) -> None:
    mem, _, placed = guest()
    with open_dump(write(tmp_path, mem, placed.text)) as d:
        r = analyze(d, strategies=["memory-scan"], vmgenid=False).to_dict()
        assert r["vmcoreinfo"]["source"] == "memory-scan" and r["vmgenid"] is None
        assert {c["source"] for c in r["candidates"]} == {"memory-scan"}
        from vmci.errors import UsageError

        with pytest.raises(UsageError, match="unknown strategy"):
            analyze(d, strategies=["guess"])
        with pytest.raises(UsageError, match="--addr-blob"):
            analyze(d, strategies=["address-blob"])


def test_jsonschema_agrees_when_installed(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    mem, dev, placed = guest()
    with open_dump(write(tmp_path, mem, placed.text)) as d:
        r = analyze(d, addr_blob=bytes(dev.addr_le)).to_dict()
    jsonschema.validate(r, ANALYZE_SCHEMA)
