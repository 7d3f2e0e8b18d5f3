"""Issue 13: whatever the user supplies is checked against what the dump itself shows, and a
disagreement is a FAIL naming both values, never a silent answer.  One test per input kind: the
other device's blob, a stale blob, a blob or record of another VM (against the dump's ACPI tables
and a migration stream's saved device state), a VMCOREINFO file of another kernel, a wrong raw
base, a forced format.  Expected values come from the generator's truth files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_vmci

from vmci.analysis.given import check_given_vmcoreinfo
from vmci.formats import open_dump
from vmci.producer.scenario import Scenario, generate

TESTDATA = Path(__file__).resolve().parents[2] / "testdata"
OVMF = TESTDATA / "vmgenid-ovmf.kdump"


def truth(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.with_name(path.name + ".truth.json").read_text())


def blob(tmp_path: Path, addr: int) -> Path:
    p = tmp_path / "blob"
    p.write_bytes(addr.to_bytes(8, "little"))
    return p


def vmgenid_page() -> int:
    return truth(OVMF)["firmware"]["allocations"]["etc/vmgenid_guid"]["address"]


def test_vmgenid_with_the_vmcoreinfo_devices_blob_fails_naming_both_pages() -> None:
    """The model case of the issue: it printed the vmcoreinfo page's version/paddr/size as a GUID."""
    t = truth(OVMF)
    other = t["firmware"]["allocations"]["etc/vmcoreinfo"]["address"]
    p = run_vmci("vmgenid", OVMF, "--addr-blob", str(OVMF) + ".addr-blob")
    assert p.returncode == 1 and p.stdout == ""
    assert f"{other:#x}" in p.stderr and f"{vmgenid_page():#x}" in p.stderr
    assert "vmcoreinfo device's page" in p.stderr
    # the right blob still gives the truth's GUID, every step ok
    good = run_vmci("vmgenid", OVMF, "--addr-blob", str(OVMF) + ".vmgenid-addr", "--json")
    data = json.loads(good.stdout)
    assert good.returncode == 0 and data["guid"] == t["vmgenid"]["guid"]
    assert "fail" not in {s["verdict"] for s in data["evidence"]}


def test_vmgenid_with_a_stale_blob_fails(tmp_path: Path) -> None:
    """A blob from before the firmware moved the page (another boot): ACPI names the current page."""
    stale = vmgenid_page() + 0x3000
    p = run_vmci("vmgenid", OVMF, "--addr-blob", blob(tmp_path, stale + 40), "--json")
    data = json.loads(p.stdout)
    assert p.returncode == 1 and data["guid"] is None
    fail = [s for s in data["evidence"] if s["verdict"] == "fail"]
    assert fail and f"{stale:#x}" in fail[0]["detail"] and f"{vmgenid_page():#x}" in fail[0]["detail"]


def test_vmgenid_blob_of_another_vm_fails(tmp_path: Path) -> None:
    other = tmp_path / "other.kdump"
    generate(Scenario(seed=9, ram=32 << 20, firmware="ovmf", vmgenid=True), other, "kdump")
    theirs = truth(other)["firmware"]["allocations"]["etc/vmgenid_guid"]["address"]
    assert theirs != vmgenid_page()  # another RAM size: the firmware allocated elsewhere
    p = run_vmci("vmgenid", OVMF, "--addr-blob", str(other) + ".vmgenid-addr")
    assert p.returncode == 1 and f"{theirs:#x}" in p.stderr and f"{vmgenid_page():#x}" in p.stderr


def test_vmgenid_blob_without_acpi_is_checked_by_the_page_content(tmp_path: Path) -> None:
    """No RSDP to compare with: the page itself holds an RFC vmcoreinfo record naming a note."""
    from vmci.analysis.vmgenid import find_vmgenid
    from vmci.core.memory import Range, SparseMemory
    from vmci.producer.linux import KernelLayout, place_vmcoreinfo

    mem = SparseMemory([Range(0, 64 << 20)])
    placed = place_vmcoreinfo(mem, KernelLayout(kaslr_offset=0x1000000, phys_base=0, seed=5),
                              0x2345000, 0x2347000)
    page = 0x3000000
    mem.write(page + 40, (0).to_bytes(4, "little") + placed.note_paddr.to_bytes(8, "little")
              + (4096).to_bytes(4, "little"))
    found = find_vmgenid(mem, addr_blob=(page + 40).to_bytes(8, "little"))
    assert found.guid is None
    fail = [s for s in found.evidence if s.verdict == "fail"]
    assert fail and f"{placed.note_paddr:#x}" in fail[0].detail and f"{page:#x}" in fail[0].detail


def test_analyze_with_the_other_devices_blob_fails() -> None:
    """analyze --addr-blob given vmgenid's blob: the RFC walk fails, the result is FAIL (exit 1)."""
    rfc = TESTDATA / "rfc-seabios.kdump"
    p = run_vmci("analyze", rfc, "--addr-blob", str(OVMF) + ".vmgenid-addr", "--json")
    data = json.loads(p.stdout)
    assert p.returncode == 1 and data["status"] == "FAIL"
    check = next(c for c in data["checks"] if c["name"] == "strategy:address-blob")
    assert check["status"] == "FAIL"
    assert data["vmcoreinfo"]["source"] != "address-blob"


def test_analyze_with_a_record_of_another_vm_fails(tmp_path: Path) -> None:
    other = tmp_path / "up.kdump"
    generate(Scenario(seed=7, ram=64 << 20, device="upstream"), other, "kdump")
    up = TESTDATA / "upstream.kdump"
    assert (Path(str(other) + ".fw-cfg-record").read_bytes()
            != Path(str(up) + ".fw-cfg-record").read_bytes())
    p = run_vmci("analyze", up, "--fw-cfg-record", str(other) + ".fw-cfg-record", "--json")
    data = json.loads(p.stdout)
    assert p.returncode == 1 and data["status"] == "FAIL"
    assert next(c for c in data["checks"] if c["name"] == "strategy:fw-cfg-record")["status"] == "FAIL"


def test_a_vmcoreinfo_file_of_another_kernel_fails_naming_both(tmp_path: Path) -> None:
    other = tmp_path / "other.kdump"
    generate(Scenario(seed=11, ram=64 << 20, kernel="5.10"), other, "kdump")
    with open_dump(other) as d:
        theirs = d.header.vmcoreinfo_text
    rfc = TESTDATA / "rfc-seabios.kdump"
    with open_dump(rfc) as d:
        ours = d.header.vmcoreinfo_text
        assert not check_given_vmcoreinfo(d, ours).failed
        ev = check_given_vmcoreinfo(d, theirs)
    fails = {s.action: s.detail for s in ev if s.verdict == "fail"}
    t = truth(rfc)
    ours_offset = f"{t['kernel']['kaslr_offset']:#x}"
    assert "given vs page tables" in fails and ours_offset in fails["given vs page tables"]
    assert "given vs dump" in fails and "OSRELEASE 5.10" in fails["given vs dump"]
    # the drgn route refuses the file before drgn sees it
    pytest.importorskip("drgn")
    from vmci.errors import UsageError
    from vmci.integrations.drgn import program_from_dump

    path = tmp_path / "vmcoreinfo.txt"
    path.write_bytes(theirs)
    with pytest.raises(UsageError, match=r"not this dump's.*given vs page tables"):
        program_from_dump(rfc, vmcoreinfo=path)


@pytest.mark.parametrize(("forced", "said"), [("raw", "is a flattened dump"),
                                              ("migration", "first bytes are a flattened dump's")])
def test_a_forced_format_is_checked_against_the_file(forced: str, said: str) -> None:
    p = run_vmci("info", TESTDATA / "rfc-seabios.kdump", "--format", forced)
    assert p.returncode == 3 and said in p.stderr and forced in p.stderr


def _check(data: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(c for c in data["checks"] if c["name"] == name)


def test_analyze_with_the_other_devices_blob_names_both_pages() -> None:
    """The blob's page and the page the dump's own ACPI tables name are both in the FAIL."""
    rfc = TESTDATA / "rfc-seabios.kdump"
    vcia = truth(rfc)["device"]["vcia"]
    theirs = int.from_bytes((TESTDATA / "vmgenid-ovmf.kdump.vmgenid-addr").read_bytes(), "little")
    p = run_vmci("analyze", rfc, "--addr-blob", str(OVMF) + ".vmgenid-addr", "--json")
    data = json.loads(p.stdout)
    check = _check(data, "address-blob-vs-acpi")
    assert p.returncode == 1 and check["status"] == "FAIL"
    assert f"{theirs - 40:#x}" in check["detail"] and f"{vcia:#x}" in check["detail"]
    # the right blob: no disagreement to report
    good = json.loads(run_vmci("analyze", rfc, "--addr-blob", str(rfc) + ".addr-blob", "--json").stdout)
    assert "address-blob-vs-acpi" not in {c["name"] for c in good["checks"]} and good["status"] != "FAIL"


def test_analyze_with_a_stale_blob_whose_page_still_reads_fails(tmp_path: Path) -> None:
    """An earlier boot's page, its content still intact (version 0, the note's paddr and size): the
    blob walk alone reaches a valid note; the dump's ACPI tables name the current page."""
    from vmci.producer.scenario import build, write_dump

    g = build(Scenario(seed=21, ram=64 << 20, device="rfc"))
    dev = g.vmcoreinfo_device
    assert dev is not None
    page = dev.address - 40
    old = page - 0x5000  # where the firmware put it last boot
    g.mem.write(old, g.mem.read(page, 4096))
    path = tmp_path / "stale.kdump"
    with path.open("wb") as f:
        write_dump(g, f, "kdump")
    p = run_vmci("analyze", path, "--addr-blob", f"{old + 40:#x}", "--json")
    data = json.loads(p.stdout)
    assert _check(data, "strategy:address-blob")["status"] == "PASS"  # the walk alone is fooled
    check = _check(data, "address-blob-vs-acpi")
    assert p.returncode == 1 and data["status"] == "FAIL" and check["status"] == "FAIL"
    assert f"{old:#x}" in check["detail"] and f"{page:#x}" in check["detail"]


def _stream(tmp_path: Path, name: str, device: str, seed: int) -> tuple[Path, object]:
    from vmci.formats.migration.writer import VmcoreinfoRecord, standard_devices, write_migration
    from vmci.producer.scenario import build

    g = build(Scenario(seed=seed, ram=64 << 20, device=device))
    dev = g.vmcoreinfo_device
    assert dev is not None
    devices = (standard_devices(vmcoreinfo_rfc_addr=dev.address) if device == "rfc"
               else standard_devices(vmcoreinfo_record=VmcoreinfoRecord(**dev.record())))
    path = tmp_path / name
    with path.open("wb") as f:
        write_migration(f, g.mem, devices=devices)
    return path, g


def test_a_blob_of_another_vm_against_a_streams_saved_blob_fails_naming_both(tmp_path: Path) -> None:
    path, g = _stream(tmp_path, "rfc.migration", "rfc", seed=7)
    other = build_other(seed=8, device="rfc")
    ours = g.vmcoreinfo_device.address  # type: ignore[attr-defined]
    theirs = other.vmcoreinfo_device.address  # type: ignore[attr-defined]
    assert ours != theirs
    p = run_vmci("analyze", path, "--addr-blob", f"{theirs:#x}", "--json")
    data = json.loads(p.stdout)
    check = _check(data, "given-vs-saved-state")
    assert p.returncode == 1 and check["status"] == "FAIL"
    assert f"{theirs:#x}" in check["detail"] and f"{ours:#x}" in check["detail"]
    same = json.loads(run_vmci("analyze", path, "--addr-blob", f"{ours:#x}", "--json").stdout)
    assert "given-vs-saved-state" not in {c["name"] for c in same["checks"]}


def test_a_record_of_another_vm_against_a_streams_saved_record_fails_naming_both(tmp_path: Path) -> None:
    path, g = _stream(tmp_path, "up.migration", "upstream", seed=7)
    other = tmp_path / "other.kdump"
    generate(Scenario(seed=12, ram=32 << 20, device="upstream"), other, "kdump")
    record = Path(str(other) + ".fw-cfg-record")
    theirs = int.from_bytes(record.read_bytes()[8:16], "little")  # le64 paddr at +8
    ours = g.vmcoreinfo_device.record()["paddr"]  # type: ignore[attr-defined]
    assert ours != theirs
    p = run_vmci("analyze", path, "--fw-cfg-record", record, "--json")
    data = json.loads(p.stdout)
    check = _check(data, "given-vs-saved-state")
    assert p.returncode == 1 and check["status"] == "FAIL"
    assert f"{theirs:#x}" in check["detail"] and f"{ours:#x}" in check["detail"]


def test_analyze_with_a_record_of_another_vm_names_both_addresses(tmp_path: Path) -> None:
    """A kdump file with QEMU's note and no saved state: the record's paddr does not hold the
    dump's own note; the FAIL names it and where the guest's note really is."""
    other = tmp_path / "up.kdump"
    generate(Scenario(seed=7, ram=64 << 20, device="upstream"), other, "kdump")
    up = TESTDATA / "upstream.kdump"
    theirs, ours = truth(other)["vmcoreinfo"]["note_paddr"], truth(up)["vmcoreinfo"]["note_paddr"]
    assert theirs != ours
    p = run_vmci("analyze", up, "--fw-cfg-record", str(other) + ".fw-cfg-record", "--json")
    data = json.loads(p.stdout)
    check = _check(data, "fw-cfg-record-vs-note")
    assert p.returncode == 1 and check["status"] == "FAIL"
    assert f"paddr {theirs:#x}" in check["detail"] and f"at {ours:#x}" in check["detail"]
    good = json.loads(run_vmci("analyze", up, "--fw-cfg-record", str(up) + ".fw-cfg-record", "--json").stdout)
    assert "fw-cfg-record-vs-note" not in {c["name"] for c in good["checks"]}


def build_other(seed: int, device: str) -> object:
    from vmci.producer.scenario import build

    return build(Scenario(seed=seed, ram=128 << 20, device=device))


@pytest.mark.parametrize("given", [0x100000, 0x4000000])
def test_a_wrong_raw_base_fails_naming_both(tmp_path: Path, given: int) -> None:
    """A raw image of RAM from physical 0, read as if it started elsewhere: the kernel's
    init_uts_ns is not where the text puts it, but at the file offset that says where the
    image really starts."""
    path = tmp_path / "g.raw"
    generate(Scenario(seed=4, ram=64 << 20), path, "raw")
    uts = truth(path)["kernel"]["uts_paddr"]
    p = run_vmci("analyze", path, "--format", "raw", "--raw-base", f"{given:#x}", "--json")
    data = json.loads(p.stdout)
    check = _check(data, "raw-base")
    assert p.returncode == 1 and data["status"] == "FAIL" and check["status"] == "FAIL"
    assert f"start at physical {given:#x}" in check["detail"] and "starts at physical 0x0" in check["detail"]
    assert f"file offset {uts:#x}" in check["detail"]
    right = json.loads(run_vmci("analyze", path, "--format", "raw", "--json").stdout)
    assert _check(right, "raw-base")["status"] == "PASS" and right["status"] == "PASS"
