"""KASLR from page tables alone and drgn on note-less dumps of a real Debian guest under QEMU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vmci.arch.x86_64.consts import START_KERNEL_MAP
from vmci.errors import FormatError
from vmci.formats import open_dump
from vmci.kernel.kaslr import kaslr_report
from vmci.kernel.symbols import load_symbols
from vmci.kernel.synthesize import synthesize
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.testing.qemu import KernelFiles, RealGuest

pytestmark = pytest.mark.realworld
DUMPS = ["elf", "elf_paging", "kdump_zlib"]
READ_RELEASE = ('from vmci.kernel.vmcoreinfo import VmcoreInfo; '
                'from vmci.kernel.synthesize import release_via; '
                'print("RELEASE=" + release_via(VmcoreInfo.parse(prog["VMCOREINFO"].string_()), prog.read))')


def kernel_note(guest: RealGuest) -> VmcoreInfo:
    """The kernel's own VMCOREINFO, as QEMU's pmemsave read it from guest RAM."""
    return VmcoreInfo.parse(guest.note_desc)


@pytest.mark.parametrize("which", DUMPS)
def test_page_tables_alone_give_the_kernels_values(without_device: RealGuest, which: str) -> None:
    note = kernel_note(without_device)
    kallsyms = without_device.guest.kallsyms
    with open_dump(without_device[which]) as d:
        assert not d.notes_named("VMCOREINFO")
        rep = kaslr_report(d)  # no text given: page tables only
    assert rep.method == "page-tables" and rep.verdict == "page-tables-only"
    assert rep.kerneloffset == note.kerneloffset and rep.kerneloffset != 0
    assert rep.phys_base == note.phys_base.value == without_device.guest.phys_base  # type: ignore[union-attr]
    assert rep.page_tables is not None
    assert rep.page_tables["text_va"] == kallsyms["_text"] == kallsyms["_stext"]
    assert rep.corroboration["banner"]["release"] == without_device.facts["release"]
    assert rep.corroboration["idt"]["ok"] and not rep.warnings


@pytest.mark.parametrize("which", ["elf", "kdump_zlib"])
def test_nokaslr_gives_defaults(nokaslr: RealGuest, which: str) -> None:
    assert nokaslr.guest.phys_base == 0 and "nokaslr" in nokaslr.guest.cmdline
    with open_dump(nokaslr[which]) as d:
        rep = kaslr_report(d)
    assert (rep.kerneloffset, rep.phys_base) == (0, 0)
    assert kernel_note(nokaslr).kerneloffset == 0


def test_offset_applied_to_debian_symbols(without_device: RealGuest, kernel_files: KernelFiles) -> None:
    """Debian's /boot/System.map is a stub (the real one is in linux-image-*-dbg); the vmlinuz carries
    the vmlinux ELF whose .text start is _text's link address."""
    if kernel_files.system_map is not None and kernel_files.system_map.is_file():
        try:
            syms = load_symbols(kernel_files.system_map)
        except FormatError:
            syms = load_symbols(kernel_files.vmlinuz)
    else:
        syms = load_symbols(kernel_files.vmlinuz)
    kallsyms = without_device.guest.kallsyms
    note = kernel_note(without_device)
    with open_dump(without_device["elf"]) as d:
        rep = kaslr_report(d, symbols=syms)
    assert rep.symbols is not None and rep.symbols["text_matches_page_tables"]
    assert syms.text is not None and syms.text + rep.kerneloffset == kallsyms["_stext"]  # type: ignore[operator]
    assert note.symbol("_stext") == kallsyms["_stext"]
    assert rep.symbols["build_id_in_memory"] == syms.build_id == note.build_id
    assert rep.corroboration["banner"]["how"] == "linux_banner" and rep.corroboration["banner"]["ok"]


@pytest.mark.parametrize("which", ["elf", "kdump_zlib"])
def test_synthesized_text_equals_the_kernels(without_device: RealGuest, which: str) -> None:
    note = kernel_note(without_device)
    with open_dump(without_device[which]) as d:
        s = synthesize(d).vmcoreinfo
    for key in ("OSRELEASE", "BUILD-ID", "PAGESIZE", "SYMBOL(swapper_pg_dir)", "KERNELOFFSET",
                "NUMBER(phys_base)", "NUMBER(pgtable_l5_enabled)"):
        assert s.get(key) == note.get(key), key
    assert int(s.get("SYMBOL(swapper_pg_dir)"), 16) - START_KERNEL_MAP < 1 << 30  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["elf", "kdump_zlib"])
@pytest.mark.parametrize("synth", [False, True])
def test_drgn_loads_noteless_dumps(without_device: RealGuest, which: str, synth: bool) -> None:
    drgn = pytest.importorskip("drgn", reason="drgn not installed")
    from drgn.commands import run_command

    from vmci.integrations.drgn import program_from_dump
    from vmci.kernel.synthesize import release_via

    path = without_device[which]
    # plain drgn: "unrecognized QEMU memory dump" (ELF), "linux.vmcoreinfo.raw is not set" (kdump)
    with pytest.raises(Exception, match=r"unrecognized QEMU memory dump|vmcoreinfo\.raw is not set"):
        drgn.Program().set_core_dump(str(path))
    text = None
    if synth:
        with open_dump(path) as d:
            text = synthesize(d).text
    prog = program_from_dump(path, vmcoreinfo=text)
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    vi = VmcoreInfo.parse(prog["VMCOREINFO"].string_())
    release = without_device.facts["release"]
    if not synth:  # the kernel's own text (memory scan): init_uts_ns + OFFSET(uts_namespace.name) + 130
        base = vi.symbol("init_uts_ns") + vi.offset("uts_namespace", "name")  # type: ignore[operator]
        assert prog.read(base + 130, 65).split(b"\0")[0].decode() == release
    assert release_via(vi, prog.read) == release
    assert run_command(prog, "vmci release") == release
    k = run_command(prog, "vmci kaslr")
    assert k["verdict"] == "agree" and k["kerneloffset"] == kernel_note(without_device).kerneloffset


@pytest.mark.parametrize("which", ["elf", "kdump_zlib"])
def test_vmcoreinfo_file_with_drgn_cli(without_device: RealGuest, which: str, tmp_path: Path) -> None:
    exe = shutil.which("drgn")
    if exe is None:
        pytest.skip("drgn command not installed")
    path = without_device[which]
    out = tmp_path / "vmcoreinfo.txt"
    vmci = [sys.executable, "-m", "vmci.cli"]
    subprocess.run([*vmci, "vmcoreinfo", str(path), "-o", str(out)], check=True, timeout=300)
    assert out.read_bytes() == without_device.note_desc
    cmd = [exe, "--vmcoreinfo", str(out), "-c", str(path), "--no-default-symbols", "-e", READ_RELEASE]
    if which == "kdump_zlib":  # QEMU's kdump header names no architecture for libkdumpfile
        cmd[1:1] = ["--architecture", "x86_64"]
    env = {**os.environ, "DRGN_DISABLE_PLUGINS": "*"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"RELEASE={without_device.facts['release']}" in proc.stdout
    via_vmci = subprocess.run([*vmci, "drgn", str(path), "--no-default-symbols", "-e", READ_RELEASE],
                              capture_output=True, text=True, timeout=300, check=False)
    assert via_vmci.returncode == 0 and f"RELEASE={without_device.facts['release']}" in via_vmci.stdout
