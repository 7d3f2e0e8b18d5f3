"""kdump-compressed variants: three ABIs, both byte orders, header versions 1-6, split sets."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import pytest
from conftest import FULL_UTSNAME, SAMPLE_VMCOREINFO, need_libkdumpfile, sample_memory, sample_notes

from vmci.errors import ExcludedPageError
from vmci.formats import open_dump
from vmci.formats.kdump import open_kdump_set, write_kdump
from vmci.formats.notes import find_desc

UTS32 = {**FULL_UTSNAME, "machine": "i686"}


def write(path: Path, mem, **kw) -> Path:
    order = "little" if kw.get("little", True) else "big"
    blob = sample_notes(byteorder=order)
    with path.open("wb") as f:
        write_kdump(f, mem, blob, vmcoreinfo_span=find_desc(blob, "VMCOREINFO", order), **kw)
    return path


@pytest.fixture(scope="module")
def mem():
    return sample_memory(seed=11, size=0x800000)


@pytest.mark.parametrize("abi", ["lp64", "i386", "arm32"])
@pytest.mark.parametrize("little", [True, False])
@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_abi_byte_order_and_version(tmp_path, mem, abi, little, version):
    machine = {"lp64": "x86_64", "i386": "i686", "arm32": "armv7l"}[abi]
    path = write(
        tmp_path / "d",
        mem,
        abi=abi,
        little=little,
        header_version=version,
        utsname={**FULL_UTSNAME, "machine": machine},
        phys_base=0x1000000,
    )
    with open_dump(path) as d:
        assert d.facts["abi"] == abi and d.facts["byte_order"] == ("little" if little else "big")
        assert d.facts["header_version"] == version
        assert d.facts["phys_base"] == 0x1000000
        for r in mem.ranges:
            assert d.memory.read(r.start, r.size) == mem.read(r.start, r.size)
        if version >= 4:
            assert [n.name for n in d.notes] == ["CORE", "CORE", "VMCOREINFO"]
        else:
            assert d.notes == []
        if version >= 3:
            assert d.facts["vmcoreinfo_text"] == SAMPLE_VMCOREINFO
        else:
            assert "vmcoreinfo_text" not in d.facts


def test_32bit_layout_told_apart_without_machine(tmp_path, mem):
    """utsname.machine empty (as QEMU writes for non-x86 targets): the sub-header decides."""
    for abi in ("i386", "arm32"):
        path = write(tmp_path / abi, mem, abi=abi, utsname={})
        with open_dump(path) as d:
            assert d.facts["abi"] in (abi, "i386") and d.facts["vmcoreinfo_text"] == SAMPLE_VMCOREINFO


def test_libkdumpfile_reads_i386_layout(tmp_path, mem):
    py = need_libkdumpfile()
    path = write(tmp_path / "i386", mem, abi="i386", utsname=UTS32)
    script = (
        "import sys, kdumpfile; k = kdumpfile.kdumpfile(sys.argv[1]); "
        "print(k.attr['arch.name'], bytes(k.attr['linux.vmcoreinfo.raw']).hex(), "
        "bytes(k.read(kdumpfile.KDUMP_MACHPHYSADDR, 0x1000, 4096)).hex())"
    )
    r = subprocess.run([py, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    arch, raw, page = r.stdout.split()
    assert arch == "ia32" and bytes.fromhex(raw) == SAMPLE_VMCOREINFO
    assert bytes.fromhex(page) == mem.read(0x1000, 4096)


def test_split_set(tmp_path, mem):
    """makedumpfile --split: each file holds a PFN range; together they hold everything."""
    max_pfn = mem.ranges[-1].end // 4096
    cut = max_pfn // 3
    parts = [
        write(tmp_path / f"part{i}", mem, split=span, utsname=FULL_UTSNAME)
        for i, span in enumerate([(0, cut), (cut, 2 * cut), (2 * cut, max_pfn)])
    ]
    with open_dump(parts[1]) as d:
        assert d.facts["split"] == 1 and (d.facts["start_pfn"], d.facts["end_pfn"]) == (cut, 2 * cut)
        with pytest.raises(ExcludedPageError, match="another file of the split set"):
            d.memory.read(0x1000, 16)
    with open_kdump_set(parts) as d:
        assert d.format == "kdump-split"
        for r in mem.ranges:
            assert d.memory.read(r.start, r.size) == mem.read(r.start, r.size)
        assert [a for a, _ in d.memory.pages()] == [a for a, _ in mem.pages()]


def test_excluded_pages(tmp_path, mem):
    path = write(tmp_path / "excl", mem, exclude=[0x100, 0x101], utsname=FULL_UTSNAME, dump_level=31)
    with open_dump(path) as d:
        with pytest.raises(ExcludedPageError, match="excluded"):
            d.memory.read(0x100000, 1)
        assert d.memory.read(0x100000, 8192, zero_fill=True) == bytes(8192)
        assert d.memory.read(0x102000, 4096) == mem.read(0x102000, 4096)
        assert json.dumps(d.facts["status_flags"]) == '["zlib"]'


def test_incomplete_dump_flag_and_empty_descriptors(tmp_path, mem):
    """makedumpfile marks a dump cut by ENOSPC or -L: the header flag is reported, and pages
    whose descriptors were never written are unreadable with that reason."""
    import struct

    path = write(tmp_path / "inc", mem, utsname=FULL_UTSNAME)
    data = bytearray(path.read_bytes())
    status = struct.unpack_from("<I", data, 424)[0]
    struct.pack_into("<I", data, 424, status | 0x8)
    sub_hdr_size, bitmap_blocks = struct.unpack_from("<iI", data, 432)
    desc = (1 + sub_hdr_size + bitmap_blocks) * 4096
    last = desc + 24 * 300
    data[last : last + 24 * 10] = bytes(24 * 10)  # ten descriptors never written
    path.write_bytes(bytes(data))
    with open_dump(path) as d:
        assert "incomplete" in d.facts["status_flags"]
        assert any("incomplete" in w for w in d.warnings)
        bad = [a for r in mem.ranges for a in range(r.start, r.end, 4096) if not d.memory.readable(a, 4096)]
        assert len(bad) == 10
        with pytest.raises(ExcludedPageError, match="incomplete"):
            d.memory.read(bad[0], 1)


def test_chunks_join_pages_and_respect_bounds(tmp_path, mem):
    path = write(tmp_path / "chunks", mem, utsname=FULL_UTSNAME)
    with open_dump(path) as d:
        for lo, hi in ((0, None), (0x1003, 0x5007), (0x9FF00, 0x100100), (0x100000 + 17, 0x300000 - 5)):
            got = list(d.memory.chunks(lo, hi, max_size=1 << 16))
            want = list(mem.chunks(lo, hi))
            assert b"".join(bytes(b) for _, b in got) == b"".join(bytes(b) for _, b in want)
            assert got[0][0] == want[0][0]
            assert all(len(b) <= 1 << 16 for _, b in got)
            for (a, b), (c, _) in itertools.pairwise(got):
                assert a + len(b) <= c
