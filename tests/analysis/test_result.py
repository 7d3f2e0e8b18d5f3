"""The typed results of analyze(): fields against the generator's truth, JSON byte for byte, exit codes,
the flat summary, and the library policies the CLI only maps (vmgenid, the vmcoreinfo text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmci.analysis.analyze import analyze, dump_info
from vmci.analysis.result import (
    AnalyzeResult,
    CheckResult,
    KeyValues,
    ProvenanceStep,
    VmgenidResult,
    kaslr_exit_code,
)
from vmci.analysis.text import vmcoreinfo_text
from vmci.analysis.vmgenid import find_vmgenid_in_dump
from vmci.core.evidence import Evidence
from vmci.core.memory import Range, SparseMemory
from vmci.discover.guest_note import RESULT
from vmci.errors import NotFoundError
from vmci.formats import open_dump
from vmci.formats.elf import write_elf
from vmci.producer.scenario import Scenario, build, write_dump

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "testdata"
GOLDEN = Path(__file__).parent / "golden"


def truth(name: str) -> dict:
    return json.loads((DATA / f"{name}.kdump.truth.json").read_text())


@pytest.mark.parametrize("name", ["rfc-seabios", "upstream", "noteless", "vmgenid-ovmf"])
def test_typed_fields_equal_the_generators_truth(name: str) -> None:
    t = truth(name)
    saved = DATA / f"{name}.kdump.vmgenid-addr"  # OVMF's RSDP is outside the F-segment: the saved blob
    with open_dump(DATA / f"{name}.kdump") as d:
        r = analyze(d, vmgenid_blob=saved.read_bytes() if saved.exists() else None)
    v = r.vmcoreinfo
    assert r.found and v.key_values is not None
    assert v.key_values.osrelease == t["kernel"]["osrelease"] == t["vmcoreinfo"]["osrelease"]
    assert v.key_values.build_id == t["kernel"]["build_id"]
    assert v.key_values.kerneloffset == t["kernel"]["kaslr_offset"]
    assert v.key_values.phys_base == t["kernel"]["phys_base"]
    found_by = {s for s, e in t["expected"].items() if e["found"]}
    assert {c.source for c in r.candidates if c.valid} <= found_by and v.source in found_by
    if v.source == "memory-scan":
        assert v.paddr == t["vmcoreinfo"]["note_paddr"]
    if t["vmgenid"] is not None:
        assert r.vmgenid is not None and str(r.vmgenid.guid) == t["vmgenid"]["guid"]
        assert r.vmgenid.paddr == t["vmgenid"]["guid_addr"]
    assert r.exit_code == 0 and r.failing_checks == ()


@pytest.mark.parametrize("name", ["rfc-seabios", "upstream", "noteless", "vmgenid-ovmf"])
def test_to_json_is_the_stored_contract(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)  # the stored copies name the dump as given on the command line
    with open_dump(f"{name}.kdump") as d:
        r = analyze(d)
    assert (r.to_json() + "\n").encode() == (GOLDEN / f"{name}.analyze.json").read_bytes()


def test_summary_is_flat_and_typed() -> None:
    t = truth("rfc-seabios")
    with open_dump(DATA / "rfc-seabios.kdump") as d:
        s = analyze(d).summary()
    assert s.found and s.source == "elf-note" and s.osrelease == t["kernel"]["osrelease"]
    assert s.kerneloffset == t["kernel"]["kaslr_offset"] and s.phys_base == t["kernel"]["phys_base"]
    assert s.status == "WARN" and s.failing_checks == () and s.candidates >= 3
    flat = s.to_dict()
    assert all(not isinstance(v, dict) for v in flat.values())
    assert json.loads(json.dumps(flat)) == flat


def test_not_found_is_a_negative_answer(tmp_path: Path) -> None:
    path = tmp_path / "empty.elf"
    with path.open("wb") as f:
        write_elf(f, SparseMemory([Range(0, 1 << 20)]), b"")
    with open_dump(path) as d:
        r = analyze(d)
        with pytest.raises(NotFoundError, match=f"no VMCOREINFO in {path}: no strategy found"):
            vmcoreinfo_text(d)
    assert not r.found and r.exit_code == 1 and "vmcoreinfo-found" in r.failing_checks
    assert r.vmcoreinfo.key_values is None and r.to_dict()["vmcoreinfo"]["key_values"] == {}
    assert r.summary().osrelease is None


def test_codes_are_typed_but_not_serialized() -> None:
    with open_dump(DATA / "rfc-seabios.kdump") as d:
        r = analyze(d)
    results = [p for p in r.provenance if p.code == RESULT]
    assert results and all(p.action == "result" for p in results)
    assert all("code" not in p for p in r.to_dict()["provenance"])
    step = ProvenanceStep("acpi", "result", None, "x", "ok", RESULT)
    assert step.to_dict() == {"strategy": "acpi", "action": "result", "paddr": None, "detail": "x",
                              "verdict": "ok"}
    kv = KeyValues(osrelease="6.1", build_id=None, pagesize=4096, kerneloffset=None, phys_base=-1,
                   crashtime=None)
    assert list(kv.to_dict()) == ["OSRELEASE", "BUILD-ID", "PAGESIZE", "KERNELOFFSET", "phys_base",
                                  "CRASHTIME"]
    assert str(CheckResult("kaslr-keys", "WARN", "why")) == "WARN kaslr-keys: why"


def test_vmgenid_result_policy() -> None:
    t = truth("vmgenid-ovmf")
    with open_dump(DATA / "vmgenid-ovmf.kdump") as d:
        found = find_vmgenid_in_dump(d)
    assert found.require() is found and found.exit_code == 0 and str(found.guid) == t["vmgenid"]["guid"]
    report = found.report()
    assert list(report) == ["schema", "guid", "paddr", "source", "evidence"]
    ev = Evidence()
    ev.fail("VGIA", "VGIA 0x1 is not a linked page address")
    missing = VmgenidResult(None, None, "acpi", ev)
    assert missing.exit_code == 1
    with pytest.raises(NotFoundError, match="no VM generation ID: VGIA: VGIA 0x1 is not a linked"):
        missing.require()


def test_kaslr_exit_code() -> None:
    assert kaslr_exit_code({"kerneloffset": 0x1000000, "verdict": "agree"}) == 0
    assert kaslr_exit_code({"kerneloffset": 0x1000000, "method": "vmcoreinfo"}) == 0
    assert kaslr_exit_code({"kerneloffset": None, "verdict": "none"}) == 1
    assert kaslr_exit_code({"kerneloffset": 0x1000000, "verdict": "conflict"}) == 1


def test_vmcoreinfo_text_found_or_synthesized(tmp_path: Path) -> None:
    g = build(Scenario(ram="64M", device="none", seed=41, cpus=2, faults=("vmcoreinfo-lost",)))
    path = tmp_path / "lost.elf"
    with path.open("wb") as f:
        write_dump(g, f, "elf-paging")
    with open_dump(path) as d:
        with pytest.raises(NotFoundError):
            vmcoreinfo_text(d)
        got = vmcoreinfo_text(d, synthesize=True)
    assert got.synthesized and got.paddr is None and "synthesized" in got.reason
    assert f"KERNELOFFSET={g.kernel.kaslr_offset:x}\n".encode() in got.raw  # type: ignore[union-attr]
    assert got.provenance()["source"] == "synthesized" and got.provenance()["sources"]
    with open_dump(DATA / "upstream.kdump") as d:
        kept = vmcoreinfo_text(d, synthesize=True)
    assert not kept.synthesized and kept.source == "elf-note"
    assert kept.provenance() == {"source": "elf-note", "paddr": None, "reason": kept.reason,
                                 "synthesized": False}


def test_info_result() -> None:
    t = truth("upstream")
    with open_dump(DATA / "upstream.kdump") as d:
        info = dump_info(d)
        assert info.to_dict()["facts"] == d.facts
    assert list(info.to_dict())[:2] == ["schema", "path"]
    assert sum(r.size for r in info.ranges) == info.memory_size
    assert [n.name for n in info.notes].count("VMCOREINFO") == 1 and len(info.cpus) == len(t["cpus"])


def test_analyze_result_is_frozen() -> None:
    with open_dump(DATA / "noteless.kdump") as d:
        r = analyze(d)
    assert isinstance(r, AnalyzeResult)
    with pytest.raises(AttributeError):
        r.status = "FAIL"  # type: ignore[misc]
