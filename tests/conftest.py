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
