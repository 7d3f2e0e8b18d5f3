"""``vmci convert`` on generated arm64 guests (QEMU ``virt``, every granule): the converted kdump is
in the guest's pages, carries the kernel's ``PHYS_OFFSET``, leaves out the pages makedumpfile's
dump level drops, and Debian's libkdumpfile opens it.

Oracles: the producer's guest (its ``SparseMemory`` is the truth of every byte, its kernel layout
of ``PHYS_OFFSET``, ``PAGESIZE`` and ``init_uts_ns``, its memory map (``Scenario.mem_map``: the
``struct page`` arrays at arm64's ``vmemmap``) the truth of every page class) and libkdumpfile
0.5.1 (``/usr/bin/python3``, Debian's ``python3-libkdumpfile``): it reads the pages and says which
are excluded, and its own arm64 translation (``addrxlat``, from ``swapper_pg_dir`` and
``kimage_voffset``) reads ``init_uts_ns`` through ``KDUMP_KVADDR``.  makedumpfile cannot be the
oracle of the page classes: Debian amd64 builds it for x86_64 only.

QEMU writes arm64 kdump files in 64 KiB blocks and its ELF files in 4 KiB pages whatever the
guest's granule; libkdumpfile counts a kdump file's PFNs in the VMCOREINFO's ``PAGESIZE`` (QEMU's
own kdump fails it with "Out-of-bounds PFN", ``tests/formats/test_interop_aarch64.py``), so a
converted file must be in the kernel's pages, as makedumpfile writes them.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import need_libkdumpfile

from vmci.convert import convert
from vmci.core.headers import KdumpHeader
from vmci.core.memory import Range
from vmci.formats import open_dump
from vmci.producer.build import build
from vmci.producer.config import Scenario
from vmci.producer.scenario import write_dump
from vmci.producer.state import Guest

U64 = (1 << 64) - 1
#: (granule, CONFIG_ARM64_VA_BITS): every granule, 48-bit and the 52-bit (LPA) and 3-level layouts
GEOMETRIES = [(4096, 48), (4096, 39), (16384, 47), (65536, 42), (65536, 52)]

LKF = r"""
import hashlib, json, sys, kdumpfile
path, uts, pages = sys.argv[1], int(sys.argv[2], 16), json.loads(sys.argv[3])
lo, hi = int(sys.argv[4], 16), int(sys.argv[5], 16)
k = kdumpfile.kdumpfile(path)
k.attr["addrxlat.ostype"] = "linux"
out = {"arch": str(k.attr["arch.name"]), "page_size": int(k.attr["arch.page_size"]),
       "release": str(k.attr["linux.uts.release"]), "pages": {}, "missing": []}
ps = out["page_size"]
for pa in range(lo, hi, ps):
    try:
        k.read(kdumpfile.KDUMP_KPHYSADDR, pa, ps)
    except kdumpfile.exceptions.NoDataException:
        out["missing"].append(pa // ps)
for pa in pages:
    try:
        out["pages"][str(pa)] = hashlib.sha1(k.read(kdumpfile.KDUMP_KPHYSADDR, pa, ps)).hexdigest()
    except Exception as e:
        out["pages"][str(pa)] = type(e).__name__ + ": " + str(e)
try:
    out["uts"] = bytes(k.read(kdumpfile.KDUMP_KVADDR, uts, 65)).split(b"\0")[0].decode()
except Exception as e:
    out["uts"] = type(e).__name__ + ": " + str(e)
json.dump(out, sys.stdout)
"""


def _guest(page_size: int, va_bits: int, tmp_path: Path, fmt: str) -> tuple[Guest, Path]:
    g = build(Scenario(arch="aarch64", ram="64M", seed=page_size + va_bits, page_size=page_size,
                       va_bits=va_bits, mem_map=True))
    path = tmp_path / f"guest.{fmt}"
    with path.open("wb") as f:
        write_dump(g, f, fmt)
    return g, path


def _lkf(path: Path, uts: int, pages: list[int], ram: Range) -> dict[str, Any]:
    py = need_libkdumpfile()
    args = [str(path), f"{uts:x}", json.dumps(pages), f"{ram.start:x}", f"{ram.end:x}"]
    r = subprocess.run([py, "-c", LKF, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(json.loads(r.stdout))


def _sha1(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(data).hexdigest()


def test_a_negative_phys_offset_is_not_repaired(tmp_path: Path) -> None:
    """KASLR's linear-map randomisation makes ``PHYS_OFFSET`` (``memstart_addr``, an ``s64``)
    negative; QEMU's kdump header holds the same 64-bit word, which a signed read and the
    kernel's unsigned ``NUMBER(PHYS_OFFSET)=0x%llx`` must not turn into a repair."""
    g, src = _guest(4096, 48, tmp_path, "kdump")
    assert g.kernel is not None
    phys_offset = g.kernel.phys_base & U64
    assert phys_offset >> 63 == 1  # the case under test: negative as an s64
    with open_dump(src) as d:
        assert isinstance(d.header, KdumpHeader) and d.header.phys_base == phys_offset
    result = convert(src, tmp_path / "out.kdump", level=0)
    assert not [r for r in result.repairs if r.startswith("phys_base")], result.repairs
    assert [r.split(":")[0] for r in result.repairs] == ["utsname"]  # QEMU's "Unknown" machine
    with open_dump(tmp_path / "out.kdump") as d:
        assert isinstance(d.header, KdumpHeader)
        assert d.header.phys_base == phys_offset and d.header.phys_base_signed == phys_offset - (1 << 64)


@pytest.mark.interop
@pytest.mark.parametrize(("page_size", "va_bits"), GEOMETRIES)
@pytest.mark.parametrize("fmt", ["kdump", "elf"])
def test_libkdumpfile_opens_the_converted_arm64_kdump(tmp_path: Path, page_size: int, va_bits: int,
                                                      fmt: str) -> None:
    g, src = _guest(page_size, va_bits, tmp_path, fmt)
    assert g.kernel is not None and g.arm_tables is not None
    out = tmp_path / "out.kdump"
    result = convert(src, out, level=31, compress="zlib")
    assert result.warnings == []
    ram = g.mem.ranges[0]
    assert g.mem_map is not None and g.mem_map.page_size == page_size
    excluded = g.mem_map.excluded(30)  # the producer's plan: every class but zero pages (kept shared)
    with open_dump(out) as d:  # the kernel's pages: block_size and PFNs in PAGESIZE units
        h = d.header
        assert isinstance(h, KdumpHeader)
        assert h.block_size == page_size and h.max_mapnr == ram.end // page_size
        assert h.utsname.machine == "aarch64"
    rng = random.Random(page_size)
    written = sorted({pa - pa % page_size for pa, _ in g.mem.data_chunks()}
                     - {pfn * page_size for pfn in excluded})
    picks = sorted(pa for pa in set(rng.sample(written, min(40, len(written))))
                   | {ram.start, ram.end - page_size, g.kernel.text_pa} if pa // page_size not in excluded)
    uts = g.kernel.runtime("init_uts_ns") + g.kernel.value("OFFSET(uts_namespace.name)") + 65 * 2
    got = _lkf(out, uts, picks, ram)
    assert (got["arch"], got["page_size"]) == ("aarch64", page_size)
    assert got["release"] == g.kernel.osrelease
    assert got["pages"] == {str(pa): _sha1(g.mem.read(pa, page_size)) for pa in picks}
    assert got["uts"] == g.kernel.osrelease  # libkdumpfile's own arm64 page-table walk
    assert set(got["missing"]) == excluded and len(excluded) > 500
    assert sum(result.excluded.values()) == len(excluded)
