"""`vmci info` and `vmci read` through the real console entry point."""

from __future__ import annotations

import json
from functools import partial

import pytest
from conftest import FULL_UTSNAME, run_vmci, sample_memory, sample_notes

from vmci.formats.elf import write_elf
from vmci.formats.kdump import write_kdump
from vmci.formats.notes import find_desc

vmci = partial(run_vmci, text=False)  # `vmci read` writes raw bytes


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    mem = sample_memory(seed=5, size=0x800000)
    blob = sample_notes()
    elf, kdump = tmp / "g.elf", tmp / "g.kdump"
    with elf.open("wb") as f:
        write_elf(f, mem, blob)
    with kdump.open("wb") as f:
        write_kdump(
            f, mem, blob, flattened=True, utsname=FULL_UTSNAME, vmcoreinfo_span=find_desc(blob, "VMCOREINFO")
        )
    return mem, elf, kdump


def test_info_json(dumps):
    mem, elf, kdump = dumps
    for path, fmt in ((elf, "elf"), (kdump, "kdump-flattened")):
        r = vmci("info", str(path), "--json")
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["format"] == fmt and info["arch"] == "x86_64"
        assert [(x["start"], x["size"]) for x in info["ranges"]] == [(r.start, r.size) for r in mem.ranges]
        assert [n["name"] for n in info["notes"]] == ["CORE", "CORE", "VMCOREINFO"]
        assert len(info["cpus"]) == 2


def test_info_human(dumps):
    _, elf, _ = dumps
    r = vmci("info", str(elf))
    assert r.returncode == 0
    out = r.stdout.decode()
    assert "ELF64 core" in out and "VMCOREINFO" in out and "0x100000" in out


def test_read_raw_and_hex_agree_with_memory(dumps):
    mem, elf, kdump = dumps
    for path in (elf, kdump):
        r = vmci("read", str(path), "0x1000", "17")
        assert r.returncode == 0 and r.stdout == mem.read(0x1000, 17) == b"low memory marker"
        h = vmci("read", str(path), "0xff8", "0x20", "--hex").stdout.decode().splitlines()
        assert h[0].split()[0] == "ff8:" and h[0].endswith("........low memo")
        assert h[1].split()[0] == "1008:" and "6b 65 72" in h[1]  # "ker"


def test_read_hole_exit_code_and_zero_fill(dumps):
    _, elf, _ = dumps
    r = vmci("read", str(elf), "0xa0000", "16")
    assert r.returncode == 4 and b"not in the dump (hole)" in r.stderr and r.stdout == b""
    r = vmci("read", str(elf), "0xa0000", "16", "--zero-fill")
    assert r.returncode == 0 and r.stdout == bytes(16)


def test_usage_errors(dumps):
    _, elf, _ = dumps
    r = vmci("read", str(elf), "zz", "16")
    assert r.returncode == 2 and r.stderr.startswith(b"vmci: error: PADDR must be an integer")
    r = vmci("info", str(elf), "--format", "bogus")
    assert r.returncode == 2
