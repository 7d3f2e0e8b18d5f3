"""``vmci analyze --scan``: the memory scan's exhaustive mode from the command line (issue 13).

By default the scan is a last resort that stops once its note cannot be outranked; ``--scan all``
runs it even when the dump's own note was found and lists every copy in every byte.  Expected
addresses come from the generator's truth file (where it placed the kernel's note and the stale
copy a kdump kernel left)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_vmci

from vmci.producer.scenario import Scenario, generate


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    path = tmp_path_factory.mktemp("scan") / "stale.elf"
    generate(Scenario(seed=5, ram=64 << 20, faults=("stale-note",)), path, "elf")
    return path, json.loads(path.with_name(path.name + ".truth.json").read_text())


def scan_candidates(data: dict) -> list[dict]:  # type: ignore[type-arg]
    return [c for c in data["candidates"] if c["source"] == "memory-scan"]


def test_default_analyze_does_not_scan_when_the_note_is_found(stale: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    path, _ = stale
    p = run_vmci("analyze", path, "--json")
    data = json.loads(p.stdout)
    assert p.returncode == 0 and data["vmcoreinfo"]["source"] == "elf-note"
    assert scan_candidates(data) == []


def test_scan_all_lists_every_copy_and_keeps_the_kernels(stale: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    path, truth = stale
    p = run_vmci("analyze", path, "--json", "--scan", "all")
    data = json.loads(p.stdout)
    found = {c["paddr"]: c for c in scan_candidates(data)}
    assert set(found) == {truth["vmcoreinfo"]["note_paddr"], truth["stale_note"]["note_paddr"]}
    # the stale copy (the kdump kernel's: KERNELOFFSET 0) is listed, the kernel's note is the scan's pick
    assert all(c["valid"] for c in found.values())
    scan = next(c for c in data["checks"] if c["name"] == "strategy:memory-scan")
    agree = next(c for c in data["checks"] if c["name"] == "sources-agree")
    assert scan["status"] == "PASS" and agree["status"] == "PASS" and "memory-scan" in agree["detail"]
    assert p.returncode == 0 and data["status"] == "PASS" and data["vmcoreinfo"]["source"] == "elf-note"
    human = run_vmci("analyze", path, "--scan", "all")
    note = truth["vmcoreinfo"]["note_paddr"]
    assert f"using {note:#x}" in human.stdout and "its text is the one another strategy found" in human.stdout


def test_scan_aligned_on_a_noteless_dump_finds_the_page_aligned_note() -> None:
    dump = Path(__file__).resolve().parents[2] / "testdata" / "noteless.kdump"
    truth = json.loads(dump.with_name(dump.name + ".truth.json").read_text())
    p = run_vmci("analyze", dump, "--json", "--scan", "aligned")
    data = json.loads(p.stdout)
    assert p.returncode == 0
    assert [c["paddr"] for c in scan_candidates(data) if c["valid"]] == [truth["vmcoreinfo"]["note_paddr"]]


def test_an_unknown_scan_mode_is_a_usage_error(stale: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    p = run_vmci("analyze", stale[0], "--scan", "everything")
    assert p.returncode == 2 and "--scan is auto, aligned, all, not 'everything'" in p.stderr
