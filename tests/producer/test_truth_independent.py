"""The producer's truth is an independent oracle: no producer module imports vmci's readers, a
broken reader leaves the truth unchanged, and reader bugs the old reader-derived truth copied
into itself (so tests compared the bug with itself) are now caught."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest

import vmci.producer
from vmci.firmware import acpi as reader
from vmci.formats import open_dump
from vmci.producer.config import Scenario
from vmci.producer.scenario import generate

PRODUCER = Path(vmci.producer.__file__).parent
FORBIDDEN = ("vmci.firmware", "vmci.discover", "vmci.analysis", "vmci.kernel.kaslr")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` names anywhere in ``path`` (top level, functions, TYPE_CHECKING)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = "vmci.producer" if node.level else node.module  # relative imports stay inside
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def test_no_producer_module_imports_a_reader() -> None:
    modules = sorted(PRODUCER.rglob("*.py"))
    assert len(modules) >= 15  # the walk sees the package
    bad = {p.name: sorted(m for m in imported_modules(p) if m.startswith(FORBIDDEN)) for p in modules}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_import_check_sees_hidden_imports(tmp_path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vmci.firmware import acpi\n"
                   "def f():\n    import vmci.discover.run\n    from vmci.kernel import kaslr\n")
    assert {"vmci.firmware", "vmci.discover.run", "vmci.kernel.kaslr"} <= imported_modules(src)


def truth_of(tmp_path: Path, name: str, **keys: object) -> dict[str, object]:
    t = generate(Scenario(seed=31, ram="32M", vmgenid=True, **keys), tmp_path / name, "elf")
    data = dict(t.data)
    data["files"] = None
    data["dump_sha256"] = hashlib.sha256(t.path.read_bytes()).hexdigest()
    return json.loads(json.dumps(data))


@pytest.mark.parametrize("firmware", ["seabios", "ovmf"])
def test_a_broken_reader_leaves_the_truth_unchanged(tmp_path, monkeypatch, firmware) -> None:
    good = truth_of(tmp_path, "good.elf", firmware=firmware, rsdp_revision=2)

    def broken(*_args: object, **_kw: object) -> object:
        raise AssertionError("the producer called vmci's ACPI reader")

    for name in ("find_rsdp", "check_rsdp", "all_rsdps", "list_tables", "fetch_table", "root_entries",
                 "find_ssdt", "leading_name_dword", "find_named_dword", "decode_integer", "ovmf_probe",
                 "ovmf_probe_at", "scan_signature"):
        monkeypatch.setattr(reader, name, broken)
    assert truth_of(tmp_path, "broken.elf", firmware=firmware, rsdp_revision=2) == good


def test_a_wrong_ovmf_probe_in_the_reader_does_not_change_the_firmware(tmp_path, monkeypatch) -> None:
    """The producer's OVMF runs its own probe: a reader probe that takes everything for a table
    would have made the emulated OVMF install the vmcoreinfo page as a table."""
    good = truth_of(tmp_path, "good.elf", firmware="ovmf", faults=["nonzero-suppressor"])
    assert good["firmware"]["allocations"]["etc/vmcoreinfo"]["opaque"]
    monkeypatch.setattr(reader, "ovmf_probe", lambda data: "SDT")
    assert truth_of(tmp_path, "wrong.elf", firmware="ovmf", faults=["nonzero-suppressor"]) == good


def test_a_reader_picking_the_stale_rsdp_is_caught(tmp_path) -> None:
    """OVMF leaves QEMU's own RSDP blob (patched, then freed) above the RSDP it publishes.  A
    reader that took the last valid RSDP instead of the first would walk QEMU's original tables;
    truth computed by that reader agreed with it, the actors' truth does not."""
    t = generate(Scenario(seed=32, ram="32M", firmware="ovmf", vmgenid=True), tmp_path / "d.elf", "elf")
    with open_dump(t.path) as d:
        valid = [r for r in reader.all_rsdps(d.memory) if r.valid]
        assert len(valid) == 2  # OVMF's and QEMU's stale copy
        stale = max(valid, key=lambda r: r.address)  # the deliberately wrong choice
        tables, _ = reader.list_tables(d.memory, stale)
        wrong = {f"{tb.signature}:{tb.oem_table_id}": tb.address for tb in tables}
        assert stale.address != t["acpi"]["rsdp"]
        assert set(wrong) == set(t["acpi"]["tables"])  # same tables by name ...
        assert all(wrong[k] != t["acpi"]["tables"][k] for k in wrong)  # ... at other addresses
        ssdt = t["device"]["ssdt"]
        assert wrong["SSDT:VMCOREIN"] != ssdt and t["acpi"]["tables"]["SSDT:VMCOREIN"] == ssdt
        # and the real reader agrees with the truth
        rsdp, _ = reader.find_rsdp(d.memory)
        assert rsdp is not None and rsdp.address == t["acpi"]["rsdp"]


def test_a_reader_ignoring_the_oem_table_id_is_caught(tmp_path) -> None:
    """A ``find_ssdt`` that returned the first SSDT whatever its id would find VMCOREIN's table for
    VMGENID: the old truth (filled by ``find_ssdt``) said the same, the actors' truth does not."""
    t = generate(Scenario(seed=33, ram="32M", vmgenid=True), tmp_path / "d.elf", "elf")
    with open_dump(t.path) as d:
        rsdp, _ = reader.find_rsdp(d.memory)
        assert rsdp is not None
        tables, _ = reader.list_tables(d.memory, rsdp)
        first_ssdt = next(tb for tb in tables if tb.signature == "SSDT")
        assert first_ssdt.address != t["vmgenid"]["ssdt"]
        found, _ = reader.find_ssdt(d.memory, "VMGENID")
        assert found is not None and found.address == t["vmgenid"]["ssdt"]
