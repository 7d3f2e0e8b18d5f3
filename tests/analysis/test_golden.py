"""Refactoring guard: ``analyze``/``kaslr`` output on ``testdata/`` equals stored copies, byte for byte.

The stored copies under ``golden/`` were written by the CLI before the second-wave restructuring;
a change that alters them must be deliberate (regenerate them with the commands in each test's
parameters, from ``testdata/``, with ``COLUMNS=100 NO_COLOR=1``, and say why in the commit).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
DUMPS = ("rfc-seabios", "upstream", "noteless", "vmgenid-ovmf")

# the entry point as the installed ``vmci`` script runs it (program name included)
MAIN = "import sys; sys.argv[0] = 'vmci'; from vmci.cli import main; main()"

CASES = [
    *((f"{d}.analyze.json", ["analyze", f"{d}.kdump", "--json"]) for d in DUMPS),
    *((f"{d}.kaslr.json", ["kaslr", f"{d}.kdump", "--json"]) for d in DUMPS),
    *((f"{d}.analyze.txt", ["analyze", f"{d}.kdump"]) for d in DUMPS),
    *((f"{d}.kaslr.txt", ["kaslr", f"{d}.kdump"]) for d in DUMPS),
    ("rfc-seabios.blob.analyze.json",
     ["analyze", "rfc-seabios.kdump", "--addr-blob", "rfc-seabios.kdump.addr-blob", "--json"]),
    ("upstream.record.analyze.json",
     ["analyze", "upstream.kdump", "--fw-cfg-record", "upstream.kdump.fw-cfg-record", "--json"]),
]


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-c", MAIN, *args], cwd=cwd, env=env,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize(("golden", "args"), CASES, ids=[c[0] for c in CASES])
def test_output_unchanged(golden: str, args: list[str]) -> None:
    p = run_cli(args, ROOT / "testdata")
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == (GOLDEN / golden).read_bytes()
