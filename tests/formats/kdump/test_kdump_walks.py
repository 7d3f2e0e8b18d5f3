"""The vectorised kdump walks (runs, chunks, data_chunks, pages) against the memory the file was
written from: which pages are data, which share the stored zero page, which are excluded, and
their bytes.  The oracle is the writer's input (a SparseMemory and the excluded PFNs), never the
reader's own page lookups."""

from __future__ import annotations

import itertools
import random
import struct
from pathlib import Path

import pytest
from conftest import FULL_UTSNAME, sample_notes

from vmci.core.memory import Range, SparseMemory
from vmci.formats import open_dump
from vmci.formats.kdump import memory as kdump_memory
from vmci.formats.kdump import open_kdump_set, write_kdump

BS = 4096


def guest(seed: int) -> tuple[SparseMemory, set[int]]:
    """Two RAM ranges, random pages written (some of them written with zeros), PFNs to exclude."""
    rnd = random.Random(seed)
    mem = SparseMemory([Range(0, 0xA0000), Range(0x100000, 0x700000)])
    for _ in range(300):
        pfn = rnd.choice([rnd.randrange(0, 0xA0), rnd.randrange(0x100, 0x800)])
        mem.write(pfn * BS, rnd.randbytes(BS) if rnd.random() < 0.8 else bytes(BS))
    exclude = {rnd.randrange(0x100, 0x800) for _ in range(100)}
    return mem, exclude


def expected(mem: SparseMemory, exclude: set[int], lo: int = 0, hi: int = 1 << 40) -> dict[int, str]:
    """The class of every described PFN in ``[lo, hi)``, from the writer's input."""
    out: dict[int, str] = {}
    for r in mem.ranges:
        for pfn in range(max(r.start // BS, lo), min(r.end // BS, hi)):
            if pfn in exclude:
                out[pfn] = "excluded"
            else:
                out[pfn] = "zero" if not any(mem.read(pfn * BS, BS)) else "data"
    return out


def classes_from_runs(runs: list) -> dict[int, str]:  # type: ignore[type-arg]
    out: dict[int, str] = {}
    for r in runs:
        kind = r.missing or ("zero" if r.zero else "data")
        for pfn in range(r.start // BS, r.end // BS):
            out[pfn] = kind
    return out


def write(path: Path, mem: SparseMemory, exclude: set[int], **kw: object) -> Path:
    with path.open("wb") as f:
        write_kdump(f, mem, sample_notes(), exclude=exclude, utsname=FULL_UTSNAME, **kw)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("window", [8, 13, 1 << 16])
@pytest.mark.parametrize(("compression", "flattened"), [("zlib", False), ("none", True), ("lzo", False)])
def test_walks_match_the_written_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int,
                                        compression: str, flattened: bool) -> None:
    monkeypatch.setattr(kdump_memory, "WINDOW", window)
    mem, exclude = guest(window)
    path = write(tmp_path / "d", mem, exclude, compression=compression, flattened=flattened)
    want = expected(mem, exclude)
    with open_dump(path) as d:
        runs = list(d.memory.runs())
        assert classes_from_runs(runs) == want
        # maximal runs: no two neighbours of one kind
        assert all(a.end < b.start or (a.missing, a.zero) != (b.missing, b.zero)
                   for a, b in itertools.pairwise(runs))
        data = {pfn for pfn, k in want.items() if k == "data"}
        readable = {pfn for pfn, k in want.items() if k != "excluded"}
        got: dict[int, bytes] = {}
        for addr, buf in d.memory.data_chunks(max_size=3 * BS):
            assert len(buf) <= 3 * BS and addr % BS == 0 and len(buf) % BS == 0
            for i in range(0, len(buf), BS):
                got[addr // BS + i // BS] = bytes(buf[i:i + BS])
        assert set(got) == data
        assert all(got[p] == mem.read(p * BS, BS) for p in data)
        pages = {a // BS: bytes(p) for a, p in d.memory.pages()}
        assert set(pages) == readable and all(pages[p] == mem.read(p * BS, BS) for p in readable)
        chunked = {}
        for addr, buf in d.memory.chunks(0x9F800, 0x200800):  # unaligned bounds
            for i in range(len(buf)):
                chunked[addr + i] = buf[i]
        want_bytes = {a for p in readable for a in range(p * BS, p * BS + BS) if 0x9F800 <= a < 0x200800}
        assert set(chunked) == want_bytes
        assert all(chunked[a] == mem.read(a, 1)[0] for a in list(want_bytes)[::97])
        # bounded: a slice of runs is the slice of the whole
        part = classes_from_runs(list(d.memory.runs(0x150000, 0x300000)))
        assert part == {p: k for p, k in want.items() if 0x150 <= p < 0x300}


def test_split_set_walks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kdump_memory, "WINDOW", 16)
    mem, exclude = guest(5)
    top = mem.ranges[-1].end // BS
    cut = 0x333
    paths = [write(tmp_path / "a", mem, exclude, split=(0, cut)),
             write(tmp_path / "b", mem, exclude, split=(cut, top), flattened=True)]
    want = expected(mem, exclude)
    with open_kdump_set(paths) as d:
        assert classes_from_runs(list(d.memory.runs())) == want
        got = {a // BS for a, b in d.memory.data_chunks(max_size=BS)}
        assert got == {p for p, k in want.items() if k == "data"}
        assert {a // BS for a, _ in d.memory.pages()} == {p for p, k in want.items() if k != "excluded"}
    # one part alone: the other part's PFNs are said to be elsewhere
    with open_dump(paths[0]) as d:
        runs = list(d.memory.runs())
        later = {p: k for p, k in classes_from_runs(runs).items() if p >= cut}
        assert later == {p: "excluded" if k == "excluded" else "in another file of the split set"
                         for p, k in want.items() if p >= cut}


def test_a_shared_page_that_is_not_zero_is_still_data(tmp_path: Path) -> None:
    """A descriptor may point at data stored for another page (a hostile or odd writer): the walk
    must not take sharing alone for zero."""
    mem = SparseMemory([Range(0, 0x10000)])
    mem.write(0x1000, b"A" * BS)
    mem.write(0x3000, b"B" * BS)
    path = write(tmp_path / "d", mem, set(), compression="none")
    raw = bytearray(path.read_bytes())
    sub_hdr_size, bitmap_blocks = struct.unpack_from("<iI", raw, 432)
    desc = (1 + sub_hdr_size + bitmap_blocks) * BS
    raw[desc + 5 * 24: desc + 6 * 24] = raw[desc + 1 * 24: desc + 2 * 24]  # PFN 5 shares PFN 1's page
    path.write_bytes(raw)
    with open_dump(path) as d:
        got = {a: bytes(b) for a, b in d.memory.data_chunks(max_size=BS)}
    assert got == {0x1000: b"A" * BS, 0x3000: b"B" * BS, 0x5000: b"A" * BS}


@pytest.mark.parametrize(("lo", "hi"), [(0x0, 0x10000), (0x9E000, 0xA2000), (0x9F800, 0xA0800),
                                        (0xFE800, 0x108800),
                                        (0x1F0000, 0x1F0000 + kdump_memory.SMALL_WALK * BS)])
def test_small_walks_page_by_page_match_the_written_memory(tmp_path: Path, lo: int, hi: int) -> None:
    # walks of at most SMALL_WALK pages (a firmware area) read page by page, without numpy
    assert (hi - lo) // BS <= kdump_memory.SMALL_WALK
    mem, exclude = guest(5)
    path = write(tmp_path / "d", mem, exclude)
    want = expected(mem, exclude, lo // BS, -(-hi // BS))
    data = {pfn for pfn, k in want.items() if k == "data"}
    readable = {pfn for pfn, k in want.items() if k != "excluded"}
    assert data or lo == 0x9F800  # pages written with data (the unaligned two-page case: none)
    with open_dump(path) as d:
        got = {}
        for addr, buf in d.memory.data_chunks(lo, hi, max_size=2 * BS):
            assert len(buf) <= 2 * BS
            got.update({addr + i: buf[i] for i in range(len(buf))})
        assert {a // BS for a in got} == {p for p in data}  # a data page at the edge is cut to [lo, hi)
        assert all(got[a] == mem.read(a, 1)[0] for a in got) and all(lo <= a < hi for a in got)
        chunked = {}
        for addr, buf in d.memory.chunks(lo, hi):
            chunked.update({addr + i: buf[i] for i in range(len(buf))})
        assert set(chunked) == {a for p in readable for a in range(p * BS, p * BS + BS) if lo <= a < hi}
        assert all(chunked[a] == mem.read(a, 1)[0] for a in list(chunked)[::61])
        pages = {a // BS: bytes(p) for a, p in d.memory.pages(lo, hi)}
        whole = {p for p in readable if lo <= p * BS and p * BS + BS <= hi}
        assert set(pages) == whole and all(pages[p] == mem.read(p * BS, BS) for p in whole)
