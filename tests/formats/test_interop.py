"""What vmci writes, the real tools accept: crash, libkdumpfile, makedumpfile, readelf, drgn."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import (
    FULL_UTSNAME,
    SAMPLE_VMCOREINFO,
    need_libkdumpfile,
    need_tool,
    sample_memory,
    sample_notes,
)

from vmci.formats.elf import write_elf
from vmci.formats.kdump import write_kdump
from vmci.formats.notes import find_desc

pytestmark = pytest.mark.interop
RELEASE = "6.1.0-vmci-test"


@pytest.fixture(scope="module")
def guest():
    return sample_memory(seed=7)


def make(tmp: Path, guest, kind: str, compression: str = "zlib") -> Path:
    blob = sample_notes()
    path = tmp / f"{kind}-{compression}"
    with path.open("wb") as f:
        if kind == "elf":
            write_elf(f, guest, blob)
        elif kind == "kexec":
            write_elf(f, guest, blob, style="kexec")
        else:
            write_kdump(
                f,
                guest,
                blob,
                compression=compression,
                flattened=kind == "flat",
                vmcoreinfo_span=find_desc(blob, "VMCOREINFO"),
                utsname=FULL_UTSNAME,
                dump_level=31,
            )
    return path


@pytest.mark.parametrize("kind", ["elf", "kexec", "kdump", "flat"])
def test_crash_osrelease(tmp_path, guest, kind):
    crash = need_tool("crash")
    r = subprocess.run(
        [crash, "--osrelease", str(make(tmp_path, guest, kind))], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == RELEASE


def test_makedumpfile_rearranges_flattened_to_identical_raw(tmp_path, guest):
    mdf = need_tool("makedumpfile")
    flat, raw = make(tmp_path, guest, "flat"), make(tmp_path, guest, "kdump")
    out = tmp_path / "rearranged"
    with flat.open("rb") as stdin:
        r = subprocess.run([mdf, "-R", str(out)], stdin=stdin, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.read_bytes() == raw.read_bytes()


@pytest.mark.parametrize("kind", ["elf", "kexec"])
def test_readelf_lists_notes(tmp_path, guest, kind):
    readelf = need_tool("readelf")
    r = subprocess.run([readelf, "-n", str(make(tmp_path, guest, kind))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    owners = [
        line.split()[0]
        for line in r.stdout.splitlines()
        if ("0x0000" in line and "NT_" in line) or "VMCOREINFO" in line
    ]
    assert owners == ["CORE", "CORE", "VMCOREINFO"]
    assert SAMPLE_VMCOREINFO[:20].hex(" ") in r.stdout


LIBKDUMPFILE_SCRIPT = r"""
import json, sys, kdumpfile
k = kdumpfile.kdumpfile(sys.argv[1])
a = k.attr
pages = {}
for addr in json.loads(sys.argv[2]):
    try:
        pages[addr] = bytes(k.read(kdumpfile.KDUMP_MACHPHYSADDR, addr, 4096)).hex()
    except Exception as e:
        pages[addr] = type(e).__name__
print(json.dumps({
    "format": a["file.format"],
    "arch": a.get("arch.name"),
    "raw": bytes(a["linux.vmcoreinfo.raw"]).hex(),
    "release": a["linux.vmcoreinfo.lines"]["OSRELEASE"],
    "pages": pages,
}))
"""


@pytest.mark.parametrize(
    ("kind", "compression"),
    [
        ("elf", ""),
        ("kexec", ""),
        ("kdump", "zlib"),
        ("kdump", "lzo"),
        ("kdump", "snappy"),
        ("kdump", "zstd"),
        ("kdump", "none"),
    ],
)
def test_libkdumpfile_reads_vmcoreinfo_and_pages(tmp_path, guest, kind, compression):
    py = need_libkdumpfile()
    path = make(tmp_path, guest, kind, compression or "zlib")
    addrs = [a for a, page in guest.pages() if any(page)][:40] + [0x1000, 0x200000]
    r = subprocess.run(
        [py, "-c", LIBKDUMPFILE_SCRIPT, str(path), json.dumps(addrs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["arch"] == "x86_64"
    assert bytes.fromhex(got["raw"]) == SAMPLE_VMCOREINFO
    assert got["release"] == RELEASE
    for addr in addrs:
        assert got["pages"][str(addr)] == guest.read(addr, 4096).hex(), hex(addr)


@pytest.mark.parametrize("kind", ["elf", "kdump"])
def test_drgn_opens_and_reads_vmcoreinfo(tmp_path, guest, kind):
    drgn = pytest.importorskip("drgn", reason="drgn is not installed (pip install 'vmci[drgn]')")
    path = make(tmp_path, guest, kind)
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    assert prog["VMCOREINFO"].string_() == SAMPLE_VMCOREINFO
    assert prog["UTS_RELEASE"].string_().decode() == RELEASE
    # physical reads through drgn's own reader match what vmci wrote
    assert prog.read(0x1000, 17, True) == b"low memory marker"
