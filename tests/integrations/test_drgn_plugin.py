"""The drgn plugin: `%vmci` commands (drgn.commands) and the drgn_prog_set warnings, loaded through the
`drgn.plugins` entry point (in-process) and by name with DRGN_PLUGINS (subprocess, as drgn users do)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vmci.formats.elf import write_elf
from vmci.producer.scenario import Guest, Scenario, build, write_dump

drgn = pytest.importorskip("drgn", reason="drgn not installed (pip install 'vmci[drgn]')")
from drgn.commands import run_command  # noqa: E402

from vmci.integrations.drgn import program_from_dump  # noqa: E402


def make(
    tmp_path: Path, *, wipe: bool = False, fmt: str = "kdump-flat", seed: int = 41
) -> tuple[Guest, Path]:
    g = build(
        Scenario(ram="64M", device="none", seed=seed, cpus=2, faults=("vmcoreinfo-lost",) if wipe else ())
    )
    path = tmp_path / f"dump.{fmt}"
    with path.open("wb") as f:
        write_dump(g, f, fmt)
    return g, path


def drgn_cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("drgn")
    if exe is None:
        pytest.skip("drgn command not installed")
    full = {**os.environ, "DRGN_DISABLE_PLUGINS": "*", "DRGN_PLUGINS": "vmci", **env}
    return subprocess.run(
        [exe, "--no-default-symbols", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=full,
    )


def test_commands_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g, path = make(tmp_path, wipe=True)
    prog = program_from_dump(path)  # the hook imports the plugin through its entry point
    capsys.readouterr()
    k = run_command(prog, "vmci kaslr --json")
    assert json.loads(capsys.readouterr().out) == k
    assert k["verdict"] == "agree" and k["kerneloffset"] == g.kernel.kaslr_offset  # type: ignore[union-attr]
    assert k["vmcoreinfo"]["synthesized"] is True
    assert run_command(prog, "vmci release") == g.kernel.osrelease  # type: ignore[union-attr]
    prov = run_command(prog, "vmci provenance")
    out = capsys.readouterr().out
    assert prov["synthesized"] and prov["loaded_from"]["source"] == "synthesized" and "SYNTHESIZED" in out
    checks = run_command(prog, "vmci checks --json")
    assert isinstance(checks, list) and all({"name", "status"} <= set(c) for c in checks)


def test_entry_point_by_name_and_warnings(tmp_path: Path) -> None:
    g, path = make(tmp_path, fmt="elf")
    koff = g.kernel.kaslr_offset  # type: ignore[union-attr]
    good = tmp_path / "good.txt"
    good.write_bytes(g.placed.text)
    code = 'from drgn.commands import run_command; run_command(prog, "vmci release")'
    ok = drgn_cli(["--vmcoreinfo", str(good), "-c", str(path), "-e", code])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == g.kernel.osrelease and "vmci:" not in ok.stderr  # type: ignore[union-attr]
    lines = g.placed.text.decode().splitlines()
    lacking = tmp_path / "lacking.txt"
    kept = [ln for ln in lines if not ln.startswith(("KERNELOFFSET", "NUMBER(phys"))]
    lacking.write_text("".join(ln + "\n" for ln in kept))
    res = drgn_cli(["--vmcoreinfo", str(lacking), "-c", str(path), "-e", "pass"])
    assert res.returncode == 0 and "lacks KERNELOFFSET and NUMBER(phys_base)" in res.stderr
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(
        g.placed.text.decode().replace(f"KERNELOFFSET={koff:x}\n", f"KERNELOFFSET={koff + 0x400000:x}\n")
    )
    res = drgn_cli(["--vmcoreinfo", str(wrong), "-c", str(path), "-e", "pass"])
    assert res.returncode == 0 and "vmci disagrees with the VMCOREINFO drgn loaded" in res.stderr
    skip = drgn_cli(["--vmcoreinfo", str(wrong), "-c", str(path), "-e", "pass"], VMCI_DRGN_CHECK="0")
    assert "disagrees" not in skip.stderr


def test_hook_flags_a_kernel_loaded_as_userspace(tmp_path: Path) -> None:
    g = build(Scenario(ram="64M", device="none", seed=43))
    path = tmp_path / "bare.elf"
    with path.open("wb") as f:
        write_elf(f, g.mem)  # no QEMU or VMCOREINFO note: drgn takes it for a userspace core
    res = drgn_cli(["-c", str(path), "-e", "print(prog.flags.value)"])
    assert res.returncode == 0 and res.stdout.strip() == "0"
    assert "holds a Linux kernel" in res.stderr and "vmci drgn" in res.stderr


def test_plugin_disabled_means_no_command(tmp_path: Path) -> None:
    _, path = make(tmp_path, fmt="elf")
    code = 'from drgn.commands import run_command; run_command(prog, "vmci release")'
    res = drgn_cli(["-c", str(path), "-e", code], DRGN_PLUGINS="")
    assert res.returncode != 0  # plain drgn refuses the QEMU dump, and %vmci does not exist


def test_dmesg_through_drgns_own_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``%vmci dmesg`` reads the log through drgn (its page-table walk, its VMCOREINFO): the
    records are what the producer's guest kernel logged."""
    from vmci.producer.scenario import generate

    path = tmp_path / "logged.elf"
    generate(Scenario(seed=3, ram="64M", log=80, panic=True, panic_cause="oom"), path, "elf")
    truth = json.loads(Path(f"{path}.truth.json").read_text())
    prog = program_from_dump(path)
    capsys.readouterr()
    log = run_command(prog, "vmci dmesg --json")
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    written = [r["text"] for r in truth["printk"]["records"] if not r["dataless"]]
    assert [r["text"] for r in lines if not r["dataless"]] == written
    assert log.variant == "lockless"
    run_command(prog, "vmci dmesg -n 1")
    last = capsys.readouterr().out.rstrip()
    assert last.endswith("---[ end Kernel panic - not syncing: System is deadlocked on memory ]---")
