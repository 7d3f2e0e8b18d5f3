"""``vmci convert`` end to end: exit codes, the summary on stderr, the path on stdout, --json, and
``vmci info`` on the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from vmci.producer import qemu_dump as qd
from vmci.producer.scenario import Scenario, build


@pytest.fixture(scope="module")
def qemu_kdump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    g = build(Scenario(ram=32 << 20, seed=31, mem_map=True))
    path = tmp_path_factory.mktemp("cli") / "qemu.kdump"
    note = qd.guest_note(g.mem, g.vmcoreinfo_device)
    with path.open("wb") as f:
        qd.write_qemu_kdump(f, g.mem, qd.qemu_notes(g.cpus, note), note, nr_cpus=2, flattened=True)
    return path


def test_convert_then_info(qemu_kdump: Path, tmp_path: Path) -> None:
    out = tmp_path / "fixed.kdump"
    p = run_cli(["convert", str(qemu_kdump), "-o", str(out), "--level", "31"], ROOT)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode() == f"{out}\n"
    err = p.stderr.decode()
    assert "wrote kdump, zlib, dump level 31" in err and "repaired: phys_base: " in err
    assert "\x1b[" not in err  # stderr is not a terminal: no progress bar
    p = run_cli(["info", str(out)], ROOT)
    assert p.returncode == 0 and b"written by vmci convert" in p.stdout
    assert b"converted: tool=vmci" in p.stdout
    p = run_cli(["-q", "convert", str(qemu_kdump), "-o", str(tmp_path / "q.elf"), "--to", "elf"], ROOT)
    assert p.returncode == 0 and p.stderr == b"" and p.stdout.decode() == f"{tmp_path / 'q.elf'}\n"


def test_json(qemu_kdump: Path, tmp_path: Path) -> None:
    args = ["convert", str(qemu_kdump), "-o", str(tmp_path / "s"), "--split", "2", "-c", "lzo", "--json"]
    p = run_cli(args, ROOT)
    assert p.returncode == 0, p.stderr.decode()
    data = json.loads(p.stdout)
    assert data["outputs"] == [str(tmp_path / "s.1"), str(tmp_path / "s.2")]
    assert data["compression"] == "lzo" and data["level"] == 1 and data["vmcoreinfo_source"] == "elf-note"
    assert all(Path(o).stat().st_size for o in data["outputs"])


@pytest.mark.parametrize(("args", "code"), [
    (["--to", "vmss"], 2), (["--level", "32"], 2), (["--split", "2", "--to", "elf"], 2),
])
def test_usage_errors(qemu_kdump: Path, tmp_path: Path, args: list[str], code: int) -> None:
    p = run_cli(["convert", str(qemu_kdump), "-o", str(tmp_path / "x"), *args], ROOT)
    assert p.returncode == code, p.stderr.decode()
    assert not list(tmp_path.iterdir())


def test_not_a_dump(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 4096)
    p = run_cli(["convert", str(junk), "-o", str(tmp_path / "x")], ROOT)
    assert p.returncode == 3 and p.stderr.startswith(b"vmci: error: ")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["junk"]
