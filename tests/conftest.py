"""Shared test helpers: external tools (skip with a reason when absent), sample guests, a small
producer kernel, and the command line run as a whole process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vmci.core.memory import Range, SparseMemory
from vmci.formats.notes import encode_notes
from vmci.producer.linux import KernelLayout

#: A producer kernel at a fixed place (KASLR offset 16 MiB, phys_base 0) that fits in 64 MiB
#: (``init_uts_ns`` lands at ~58 MiB), for tests that lay out ``vmcoreinfo_note`` and
#: ``vmcoreinfo_data`` themselves with ``place_vmcoreinfo``.
SMALL_KERNEL = KernelLayout(kaslr_offset=0x1000000, phys_base=0, seed=5)

SAMPLE_VMCOREINFO = (
    b"OSRELEASE=6.1.0-vmci-test\n"
    b"BUILD-ID=0123456789abcdef0123456789abcdef01234567\n"
    b"PAGESIZE=4096\n"
    b"SYMBOL(init_uts_ns)=ffffffff82a13a00\n"
    b"OFFSET(uts_namespace.name)=4\n"
    b"SYMBOL(swapper_pg_dir)=ffffffff8260a000\n"
    b"SYMBOL(_stext)=ffffffff81000000\n"
    b"NUMBER(phys_base)=0\n"
    b"SYMBOL(init_top_pgt)=ffffffff8260a000\n"
    b"NUMBER(pgtable_l5_enabled)=0\n"
    b"KERNELOFFSET=0\n"
)
FULL_UTSNAME = {
    "sysname": "Linux",
    "nodename": "guest",
    "release": "6.1.0-vmci-test",
    "version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.0",
    "machine": "x86_64",
    "domainname": "(none)",
}


def need_tool(name: str) -> str:
    """Path of an external tool, or skip the test saying which package provides it."""
    path = shutil.which(name)
    if path is None:
        pkgs = {
            "crash": "crash",
            "makedumpfile": "makedumpfile",
            "readelf": "binutils",
            "iasl": "acpica-tools",
            "qemu-system-x86_64": "qemu-system-x86",
        }
        pytest.skip(f"{name} is not installed (Debian package {pkgs.get(name, name)})")
    return path


def need_libkdumpfile() -> str:
    """/usr/bin/python3 when it can import Debian's python3-libkdumpfile, else skip."""
    py = "/usr/bin/python3"
    if not Path(py).exists():
        pytest.skip("/usr/bin/python3 is missing (Debian python3-libkdumpfile needs it)")
    r = subprocess.run([py, "-c", "import kdumpfile"], capture_output=True)
    if r.returncode:
        pytest.skip("Debian's python3-libkdumpfile is not installed")
    return py


def sample_memory(seed: int = 1, size: int = 0x2000000) -> SparseMemory:
    """A small PC-like guest: low RAM below 0xA0000 and RAM from 1 MiB, some pages filled."""
    import random

    mem = SparseMemory([Range(0, 0xA0000), Range(0x100000, size - 0x100000)])
    rnd = random.Random(seed)
    for _ in range(64):
        addr = rnd.randrange(0x100000, size - 0x3000) & ~0xFFF
        mem.write(addr + rnd.randrange(0, 64), rnd.randbytes(rnd.randrange(1, 9000)))
    mem.write(0x1000, b"low memory marker")
    return mem


def sample_notes(text: bytes = SAMPLE_VMCOREINFO, cpus: int = 2, byteorder: str = "little") -> bytes:
    """CORE/NT_PRSTATUS notes for each CPU, then the VMCOREINFO note, as QEMU orders them."""
    notes = [*(("CORE", 1, bytes(336)) for _ in range(cpus)), ("VMCOREINFO", 0, text)]
    return encode_notes(notes, byteorder)


#: The repository (testdata/ and the golden copies are found from it).
ROOT = Path(__file__).resolve().parents[1]
#: The entry point as the installed ``vmci`` script runs it (program name included).
MAIN = "import sys; sys.argv[0] = 'vmci'; from vmci.cli import main; main()"


def run_cli(args: list[str], cwd: Path | None = None, *,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """The installed ``vmci`` script run as a whole process in the terminal the golden copies were
    written in (100 columns, no colour); stdout and stderr as bytes."""
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-c", MAIN, *args], cwd=cwd, env=env, capture_output=True,
                          timeout=timeout)


def run_vmci(
    *args: str | os.PathLike[str], text: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[Any]:
    """``python -m vmci.cli ARGS`` as a whole process: the exit code and the output a user sees
    (``text=False`` keeps stdout/stderr as bytes, e.g. for ``vmci read``)."""
    return subprocess.run([sys.executable, "-m", "vmci.cli", *map(str, args)], capture_output=True, text=text,
                          timeout=timeout)


def guest_dump(tmp_path: Path, fmt: str = "elf", *, wipe: bool = False, processes: int = 0, name: str = "g",
               **kw: object) -> tuple[Any, Path]:
    """A generated guest (64 MiB, no vmcoreinfo device) written as ``fmt`` to ``tmp_path/name.fmt``:
    ``wipe`` zeroes the kernel's VMCOREINFO note and text (fault ``vmcoreinfo-lost``: only the page
    tables and the image survive), ``processes`` puts vCPUs 1.. on process PGDs (user-mode CR3 with
    PTI).  Returns the producer's guest (its truth) and the path."""
    from vmci.producer.scenario import Scenario, build, write_dump

    faults = ("vmcoreinfo-lost",) if wipe else ()
    g = build(Scenario(**{"ram": "64M", "device": "none", "faults": faults, **kw}))  # type: ignore[arg-type]
    assert g.tables is not None
    if processes:
        for i in range(1, min(processes + 1, len(g.cpus))):
            p = g.tables.add_process()
            g.cpus[i] = g.tables.cpu_state(i, cr3=p.cr3_user, user=True)
        g.tables.flush()
    path = tmp_path / f"{name}.{fmt}"
    with path.open("wb") as f:
        write_dump(g, f, fmt)
    return g, path


def note_dump(tmp_path: Path, mem: SparseMemory, text: bytes | None, kind: str = "elf") -> Path:
    """``mem`` written as an ELF or kdump file with QEMU's notes: a CORE note, then the VMCOREINFO
    note holding ``text`` (none when ``text`` is None)."""
    from vmci.formats.elf import write_elf
    from vmci.formats.kdump import write_kdump
    from vmci.formats.notes import find_desc

    blob = encode_notes([("CORE", 1, bytes(336))] + ([("VMCOREINFO", 0, text)] if text else []))
    path = tmp_path / f"d.{kind}"
    with path.open("wb") as f:
        if kind == "elf":
            write_elf(f, mem, blob)
        else:
            write_kdump(f, mem, blob, vmcoreinfo_span=find_desc(blob, "VMCOREINFO") if text else None)
    return path


def schema_errors(value: object, schema: dict | None = None) -> list[str]:
    """``$.path: message`` for each way ``value`` breaks ``schema`` (default: the analyze contract,
    generated from the result dataclasses), checked by jsonschema, not by vmci."""
    import jsonschema

    if schema is None:
        from vmci.analysis.schema import ANALYZE_SCHEMA

        schema = ANALYZE_SCHEMA
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for err in validator.iter_errors(value):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        out.append(f"{path}: {err.message}")
    return out
