"""``vmci generate`` (the typer command in vmci/generate_cli.py) and the testdata it made."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vmci.cli.generate import generate
from vmci.formats import open_dump

TESTDATA = Path(__file__).resolve().parents[2] / "testdata"


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    app.command()(generate)

    @app.command()
    def other() -> None:  # a second command makes typer keep "generate" as a subcommand
        pass

    return app


def run(app: typer.Typer, *args: str) -> object:
    return CliRunner().invoke(app, ["generate", *args])


def test_flags_write_dump_truth_and_blob(app, tmp_path) -> None:
    out = tmp_path / "d.elf"
    r = run(app, "-o", str(out), "--format", "elf", "--ram", "32M", "--seed", "5", "--cpus", "1",
            "--kernel", "5.10", "--nokaslr", "--vmgenid")
    assert r.exit_code == 0, r.output
    truth = json.loads((tmp_path / "d.elf.truth.json").read_text())
    assert truth["scenario"]["seed"] == 5 and truth["kernel"]["kaslr_offset"] == 0
    assert truth["kernel"]["profile"] == "5.10" and len(truth["cpus"]) == 1
    blob = (tmp_path / "d.elf.addr-blob").read_bytes()
    assert int.from_bytes(blob, "little") == truth["device"]["blob"]
    assert "addr-blob:" in r.output and "in the dump: yes" in r.output
    with open_dump(out) as d:
        assert d.notes[-1].name == "VMCOREINFO"


def test_scenario_file_and_overrides(app, tmp_path) -> None:
    sc = tmp_path / "s.toml"
    sc.write_text('seed = 3\nram = "32M"\ndevice = "upstream"\nfaults = ["size-undersize"]\n')
    out = tmp_path / "d.kdump"
    r = run(app, "--scenario", str(sc), "-o", str(out), "--format", "kdump", "--compression", "lzo",
            "--seed", "9", "--fault", "stale-note")
    assert r.exit_code == 0, r.output
    t = json.loads((tmp_path / "d.kdump.truth.json").read_text())
    assert t["scenario"]["seed"] == 9 and t["scenario"]["device"] == "upstream"
    assert [f["name"] for f in t["faults"]] == ["stale-note", "size-undersize"]
    assert t["compression"] == "lzo" and (tmp_path / "d.kdump.fw-cfg-record").stat().st_size == 16
    assert "in the dump: no (guest note size is invalid: 8)" in r.output
    with open_dump(out) as d:
        assert d.facts["compression"] == "lzo"


def test_usage_errors_exit_2(app, tmp_path) -> None:
    for args in (["--fault", "nope"], ["--format", "vmss"], ["--ram", "lots"], ["--device", "x"], []):
        r = run(app, *(["-o", str(tmp_path / "x")] if args else []), *args)
        assert r.exit_code == 2, (args, r.output)
    r = run(app, "--scenario", str(tmp_path / "missing.toml"), "-o", str(tmp_path / "x"))
    assert r.exit_code == 2 and "cannot read scenario" in r.output


def test_list_faults(app) -> None:
    r = run(app, "--list-faults")
    assert r.exit_code == 0 and "rfc-offset-36" in r.output and "guest-driver" in r.output


def readme_commands() -> list[list[str]]:
    lines = (TESTDATA / "README.md").read_text().splitlines()
    return [shlex.split(line)[2:] for line in lines if line.startswith("vmci generate ")]


def test_testdata_regenerates_byte_identical(app, tmp_path) -> None:
    commands = readme_commands()
    assert len(commands) == 4
    for argv in commands:
        i = argv.index("-o")
        name = Path(argv[i + 1]).name
        argv[i + 1] = str(tmp_path / name)
        r = run(app, *argv)
        assert r.exit_code == 0, r.output
        made = sorted(p.name for p in tmp_path.glob(name + "*"))
        kept = sorted(p.name for p in TESTDATA.glob(name + "*"))
        assert made == kept
        for f in made:
            assert (tmp_path / f).read_bytes() == (TESTDATA / f).read_bytes(), f
        assert (TESTDATA / name).stat().st_size < 1 << 20


def test_testdata_truth_matches_the_dumps() -> None:
    for truth_file in TESTDATA.glob("*.truth.json"):
        t = json.loads(truth_file.read_text())
        with open_dump(TESTDATA / t["files"]["dump"]) as d:
            paddr = t["vmcoreinfo"]["note_paddr"]
            assert d.memory.read(paddr + 12, 11) == b"VMCOREINFO\0"
            has_note = any(n.name == "VMCOREINFO" for n in d.notes)
            assert has_note == t["dump"]["guest_note"]["appended"] == t["expected"]["elf-note"]["found"]
            if t["vmgenid"]:
                import uuid

                raw = d.memory.read(t["vmgenid"]["guid_addr"], 16)
                assert str(uuid.UUID(bytes_le=raw)) == t["vmgenid"]["guid"]
