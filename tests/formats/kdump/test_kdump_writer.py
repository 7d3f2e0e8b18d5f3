"""The kdump writer: the typed header in, the bitmap of excluded PFNs, and conversion (a read
header, changed, written again).  Files are checked at makedumpfile's fixed offsets
(``diskdump_mod.h``, LP64) and against the memory written, not through vmci's reader alone."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import FULL_UTSNAME, sample_memory, sample_notes

from vmci.core.headers import KdumpHeader, Utsname
from vmci.errors import UsageError
from vmci.formats import open_dump
from vmci.formats.kdump import PfnBitmap, write_kdump
from vmci.formats.notes import find_desc

BS = 4096


@pytest.fixture(scope="module")
def mem():
    return sample_memory(seed=21, size=0x800000)


def second_bitmap(path: Path) -> tuple[bytes, int]:
    """The 2nd bitmap and max_mapnr, found at the LP64 header's fixed offsets."""
    data = path.read_bytes()
    sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from("<iII", data, 432)
    half = bitmap_blocks * BS // 2
    start = (1 + sub_hdr_size) * BS + half
    return data[start : start + half], max_mapnr


def write(path: Path, mem, header: KdumpHeader | None = None, **kw) -> Path:  # type: ignore[no-untyped-def]
    blob = sample_notes()
    with path.open("wb") as f:
        write_kdump(f, mem, blob, header, vmcoreinfo_span=find_desc(blob, "VMCOREINFO"), **kw)
    return path


def test_header_object_and_keywords_write_the_same_bytes(tmp_path: Path, mem) -> None:
    header = KdumpHeader(header_version=5, abi="i386", byte_order="big", utsname=Utsname(**FULL_UTSNAME),
                         phys_base=-0x200000, dump_level=31, nr_cpus=2, tv_sec=7, tv_usec=8,
                         compression="lzo")
    a = write(tmp_path / "a", mem, header)
    b = write(tmp_path / "b", mem, header_version=5, abi="i386", little=False, utsname=FULL_UTSNAME,
              phys_base=-0x200000, dump_level=31, nr_cpus=2, timestamp=(7, 8), compression="lzo")
    c = write(tmp_path / "c", mem, KdumpHeader(), header_version=5, abi="i386", little=False,
              utsname=FULL_UTSNAME, phys_base=-0x200000, dump_level=31, nr_cpus=2, timestamp=(7, 8),
              compression="lzo")
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()
    data = a.read_bytes()
    # i386, big-endian: header_version at 8, tv_sec at 404, status at 412 (DUMP_DH_COMPRESSED_LZO)
    assert struct.unpack_from(">i", data, 8)[0] == 5 and struct.unpack_from(">iiI", data, 404) == (7, 8, 2)
    assert struct.unpack_from(">Ii", data, BS) == (0xFFE00000, 31)


@pytest.mark.parametrize("shape", ["list", "pfn-bitmap", "numpy", "packed"])
def test_exclusions_in_every_shape(tmp_path: Path, mem, shape: str) -> None:
    pfns = [0x100, 0x101, 0x7FF, 5, 1 << 40]  # the last one is beyond the dump: ignored
    max_pfn = mem.ranges[-1].end // BS
    flags = np.zeros(max_pfn, dtype=bool)
    flags[[p for p in pfns if p < max_pfn]] = True
    exclude = {
        "list": pfns,
        "pfn-bitmap": PfnBitmap.from_pfns(pfns, max_pfn),
        "numpy": flags,
        "packed": bytes(np.packbits(flags, bitorder="little")),
    }[shape]
    path = write(tmp_path / shape, mem, exclude=exclude, utsname=FULL_UTSNAME)
    bitmap2, max_mapnr = second_bitmap(path)
    readable = {a // BS for r in mem.ranges for a in range(r.start, r.end, BS)}
    dumped = {p for p in range(max_mapnr) if bitmap2[p >> 3] >> (p & 7) & 1}
    assert dumped == readable - set(pfns)
    with open_dump(path) as d:
        for p in (0x102, 0x7FE, 6):
            assert d.memory.read(p * BS, BS) == mem.read(p * BS, BS)
        assert not d.memory.readable(0x100 * BS, 1) and not d.memory.readable(5 * BS, 1)


def test_a_read_header_changed_and_written_again(tmp_path: Path, mem) -> None:
    """Conversion: the source dump's header with dump_level and compression changed."""
    src = write(tmp_path / "src", mem, header_version=6, utsname=FULL_UTSNAME, phys_base=0x1000000,
                nr_cpus=2, timestamp=(1700000000, 5))
    with open_dump(src) as d:
        assert isinstance(d.header, KdumpHeader)
        header = replace(d.header, dump_level=31, compression="zstd")
        out = tmp_path / "converted"
        with out.open("wb") as f:
            write_kdump(f, d.memory, sample_notes(), header, flattened=True,
                        vmcoreinfo_span=find_desc(sample_notes(), "VMCOREINFO"))
    with open_dump(out) as c:
        assert isinstance(c.header, KdumpHeader) and c.format == "kdump-flattened"
        assert (c.header.dump_level, c.header.compression, c.header.phys_base) == (31, "zstd", 0x1000000)
        assert (c.header.tv_sec, c.header.tv_usec, c.header.nr_cpus) == (1700000000, 5, 2)
        assert c.header.utsname == Utsname(**FULL_UTSNAME)
        for r in mem.ranges:
            assert c.memory.read(r.start, r.size) == mem.read(r.start, r.size)


def test_a_split_header_needs_its_range(tmp_path: Path, mem) -> None:
    with pytest.raises(UsageError, match="start_pfn and end_pfn"):
        write(tmp_path / "x", mem, KdumpHeader(split=1))
