"""The console commands chained as a user would: generate a dump, analyze it, feed drgn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_vmci as vmci


def test_generate_then_analyze_with_the_saved_blob(tmp_path: Path) -> None:
    out = tmp_path / "rfc.kdump"
    r = vmci(
        "generate",
        "-o",
        str(out),
        "--format",
        "kdump-flat",
        "--ram",
        "32M",
        "--seed",
        "9",
        "--device",
        "rfc",
        "--vmgenid",
    )
    assert r.returncode == 0, r.stderr
    truth = json.loads(Path(f"{out}.truth.json").read_text())
    r = vmci("analyze", str(out), "--addr-blob", f"{out}.addr-blob", "--strategy", "address-blob", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["vmcoreinfo"]["source"] == "address-blob"
    assert report["vmcoreinfo"]["paddr"] == truth["vmcoreinfo"]["note_paddr"]
    r = vmci("vmgenid", str(out))
    assert r.returncode == 0 and r.stdout.strip() == truth["vmgenid"]["guid"]


def test_generate_noteless_then_vmcoreinfo_for_drgn(tmp_path: Path) -> None:
    drgn = pytest.importorskip("drgn", reason="drgn is not installed (pip install 'vmci[drgn]')")
    out = tmp_path / "noteless.elf"
    r = vmci("generate", "-o", str(out), "--format", "elf", "--ram", "32M", "--seed", "5", "--device", "none")
    assert r.returncode == 0, r.stderr
    text = tmp_path / "vmcoreinfo.txt"
    r = vmci("vmcoreinfo", str(out), "-o", str(text))
    assert r.returncode == 0, r.stderr
    prog = drgn.Program(vmcoreinfo=text.read_bytes())
    prog.set_core_dump(str(out))
    release = json.loads(Path(f"{out}.truth.json").read_text())["kernel"]["osrelease"]
    assert prog["UTS_RELEASE"].string_().decode() == release
