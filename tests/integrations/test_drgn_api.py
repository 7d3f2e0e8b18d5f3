"""vmci.integrations.drgn: drgn 0.3.0 loads dumps it refuses alone, through every route; CLI `vmci drgn` and
`vmci vmcoreinfo -o F` + `drgn --vmcoreinfo F -c DUMP`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vmci.cli import app
from vmci.errors import NotFoundError
from vmci.kernel.synthesize import release_via
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.producer.scenario import Guest, Scenario, build, write_dump

drgn = pytest.importorskip("drgn", reason="drgn not installed (pip install 'vmci[drgn]')")
from vmci.integrations.drgn import program_from_dump  # noqa: E402

READ_RELEASE = (
    "from vmci.kernel.vmcoreinfo import VmcoreInfo; from vmci.kernel.synthesize import release_via; "
    'print("RELEASE=" + release_via(VmcoreInfo.parse(prog["VMCOREINFO"].string_()), prog.read))'
)


def make(tmp_path: Path, fmt: str, *, wipe: bool, **kw: object) -> tuple[Guest, Path]:
    faults = ("vmcoreinfo-lost",) if wipe else ()
    g = build(Scenario(**{"ram": "64M", "device": "none", "seed": 31, "faults": faults, **kw}))  # type: ignore[arg-type]
    path = tmp_path / f"dump.{fmt}"
    with path.open("wb") as f:
        write_dump(g, f, fmt)
    return g, path


def release(prog: drgn.Program) -> str | None:
    return release_via(VmcoreInfo.parse(prog["VMCOREINFO"].string_()), prog.read)


def test_plain_drgn_refuses_the_qemu_elf(tmp_path: Path) -> None:
    _, path = make(tmp_path, "elf", wipe=False)
    with pytest.raises(ValueError, match="unrecognized QEMU memory dump"):
        drgn.Program().set_core_dump(str(path))


@pytest.mark.parametrize("fmt", ["elf", "elf-paging", "kdump", "kdump-flat", "raw"])
@pytest.mark.parametrize("wipe", [False, True])
def test_program_from_dump(tmp_path: Path, fmt: str, wipe: bool) -> None:
    g, path = make(tmp_path, fmt, wipe=wipe, la57=fmt == "kdump", pti=fmt == "elf")
    if fmt == "raw" and wipe:  # no CPU state, no note: nothing to synthesize from
        with pytest.raises(NotFoundError, match="cannot synthesize"):
            program_from_dump(path, format="raw")
        return
    prog = program_from_dump(path, format="raw" if fmt == "raw" else "auto")
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    info = prog.cache["vmci"]
    assert info["synthesized"] is wipe and info["route"] == ("custom" if fmt == "raw" else "core-dump")
    assert info["source"] == ("synthesized" if wipe else "memory-scan")
    assert release(prog) == g.kernel.osrelease  # type: ignore[union-attr]
    assert prog["UTS_RELEASE"].string_().decode() == g.kernel.osrelease  # type: ignore[union-attr]


def test_given_text_file_and_forced_custom_route(tmp_path: Path) -> None:
    g, path = make(tmp_path, "kdump-flat", wipe=False)
    text = tmp_path / "vi.txt"
    text.write_bytes(g.placed.text)
    prog = program_from_dump(path, vmcoreinfo=text, custom=True)
    assert prog.cache["vmci"]["route"] == "custom" and prog.cache["vmci"]["synthesized"] is False
    assert release(prog) == g.kernel.osrelease  # type: ignore[union-attr]


def test_vmci_drgn_cli_exec(tmp_path: Path) -> None:
    g, path = make(tmp_path, "kdump-flat", wipe=True)
    vmci = [sys.executable, "-m", "vmci.cli"]
    proc = subprocess.run(
        [*vmci, "drgn", str(path), "--no-default-symbols", "-e", READ_RELEASE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"RELEASE={g.kernel.osrelease}" in proc.stdout  # type: ignore[union-attr]
    bad = CliRunner().invoke(app, ["drgn", str(tmp_path / "missing"), "-e", "pass"])
    assert bad.exit_code != 0


def test_vmcoreinfo_file_works_with_drgn_cli(tmp_path: Path) -> None:
    exe = shutil.which("drgn")
    if exe is None:
        pytest.skip("drgn command not installed")
    g, path = make(tmp_path, "elf", wipe=True)
    out = tmp_path / "vi.txt"
    res = CliRunner().invoke(app, ["vmcoreinfo", str(path), "-o", str(out), "--synthesize"])
    assert res.exit_code == 0, res.output
    env = dict(os.environ, DRGN_DISABLE_PLUGINS="*")
    cmd = [exe, "--vmcoreinfo", str(out), "-c", str(path), "--no-default-symbols", "-e", READ_RELEASE]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"RELEASE={g.kernel.osrelease}" in proc.stdout  # type: ignore[union-attr]
