"""Refactoring guard: ``analyze``/``kaslr`` output on ``testdata/`` equals stored copies, byte for byte.

The stored copies under ``golden/`` were written by the CLI before the second-wave restructuring;
a change that alters them must be deliberate (regenerate them with the commands in each test's
parameters, from ``testdata/``, with ``COLUMNS=100 NO_COLOR=1``, and say why in the commit).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, run_cli

GOLDEN = Path(__file__).parent / "golden"
DUMPS = ("rfc-seabios", "upstream", "noteless", "vmgenid-ovmf")

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


@pytest.mark.parametrize(("golden", "args"), CASES, ids=[c[0] for c in CASES])
def test_output_unchanged(golden: str, args: list[str]) -> None:
    p = run_cli(args, ROOT / "testdata")
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == (GOLDEN / golden).read_bytes()
