"""``runs()`` of the ELF, raw and migration readers against the memory the files were written from
(the writer's input is the oracle): data runs hold every non-zero page, zero runs only zeros,
described-only stretches are one run whatever their size, and walks over them take no time."""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path

import pytest

from vmci.core.memory import Range, SparseMemory
from vmci.formats import open_dump
from vmci.formats.elf import write_elf
from vmci.formats.migration.writer import write_migration
from vmci.formats.raw import write_raw

BS = 4096
MiB = 1 << 20


def guest(size: int = 8 * MiB, seed: int = 1, whole: bool = False) -> SparseMemory:
    ranges = [Range(0, size)] if whole else [Range(0, 0xA0000), Range(0x100000, size - 0x100000)]
    mem = SparseMemory(ranges)
    rnd = random.Random(seed)
    for _ in range(40):
        pfn = rnd.randrange(0x100, size // BS - 4)
        mem.write(pfn * BS, rnd.randbytes(BS * rnd.randrange(1, 4)))
    mem.write(0x5000, b"low")
    return mem


def check_runs(memory, oracle: SparseMemory) -> None:  # type: ignore[no-untyped-def]
    nonzero = {p for p in oracle.stored_pages() if any(oracle.read(p * BS, BS))}
    data_pages: set[int] = set()
    for r in memory.runs():
        assert r.missing is None, r
        pages = set(range(r.start // BS, -(-r.end // BS)))
        if r.zero:
            assert not pages & nonzero, f"zero run {r} holds data"
        else:
            data_pages |= pages
    assert nonzero <= data_pages
    got = {a: bytes(b) for a, b in memory.data_chunks()}
    joined = {a + i: v for a, b in got.items() for i, v in enumerate(b)}
    for p in nonzero:
        assert bytes(joined[p * BS + i] for i in range(BS)) == oracle.read(p * BS, BS)


def test_sparse_elf_runs_follow_the_file_holes(tmp_path: Path) -> None:
    mem = guest(size=64 * MiB)
    path = tmp_path / "d.elf"
    with path.open("wb") as f:
        write_elf(f, mem, sparse=True)
    with open_dump(path) as d:
        check_runs(d.memory, mem)
        zero = sum(r.size for r in d.memory.runs() if r.zero)
    st = path.stat()
    holes = st.st_size - st.st_blocks * 512  # what the file system did not allocate
    assert zero >= holes - 64 * 1024 and (holes > 8 * MiB or zero < 8 * MiB)


def test_raw_runs_follow_the_file_holes(tmp_path: Path) -> None:
    mem = guest()
    path = tmp_path / "d.raw"
    with path.open("wb") as f:
        write_raw(f, mem)
    with open_dump(path, format="raw") as d:
        data = [r for r in d.memory.runs() if r.data]
        got = {a: bytes(b) for a, b in d.memory.data_chunks()}
    assert sum(len(b) for b in got.values()) == sum(r.size for r in data)
    for p in mem.stored_pages():
        if any(mem.read(p * BS, BS)):
            a = max(x for x in got if x <= p * BS)
            assert got[a][p * BS - a:p * BS - a + BS] == mem.read(p * BS, BS)


def test_migration_runs_from_the_page_index(tmp_path: Path) -> None:
    mem = guest(size=16 * MiB, whole=True)
    path = tmp_path / "d.mig"
    with path.open("wb") as f:
        write_migration(f, mem)
    with open_dump(path) as d:
        check_runs(d.memory, mem)
        assert any(r.zero for r in d.memory.runs())  # the writer sends ZERO records


def test_a_described_only_tail_of_petabytes_is_one_run(tmp_path: Path) -> None:
    """The ~4 PiB p_memsz of issue 13: every walk crosses it in O(1)."""
    mem = guest()
    path = tmp_path / "d.elf"
    with path.open("wb") as f:
        write_elf(f, mem, sparse=True)
    raw = bytearray(path.read_bytes())
    phoff, = struct.unpack_from("<Q", raw, 32)
    phnum, = struct.unpack_from("<H", raw, 56)
    for i in range(phnum):
        at = phoff + i * 56
        if struct.unpack_from("<I", raw, at)[0] == 1:  # PT_LOAD: p_memsz at +40
            struct.pack_into("<Q", raw, at + 40, 0xF_FFFF_FFFF_F000)
    path.write_bytes(raw)
    with open_dump(path) as d:
        t = time.perf_counter()
        runs = list(d.memory.runs())
        n = sum(len(b) for _, b in d.memory.chunks())
        pages = sum(1 for _ in d.memory.pages())
        assert time.perf_counter() - t < 2
    assert any(r.missing and "p_memsz" in r.missing and r.size > 1 << 48 for r in runs)
    assert n == sum(r.size for r in runs if r.missing is None) and pages * BS <= n


@pytest.mark.parametrize("fmt", ["elf", "raw"])
def test_data_chunks_bounds(tmp_path: Path, fmt: str) -> None:
    mem = guest()
    path = tmp_path / f"d.{fmt}"
    with path.open("wb") as f:
        (write_elf if fmt == "elf" else write_raw)(f, mem)
    with open_dump(path, format=fmt) as d:
        got = [(a, len(b)) for a, b in d.memory.data_chunks(0x100800, 0x300800, max_size=BS)]
    assert all(a >= 0x100800 and a + n <= 0x300800 and n <= BS for a, n in got)
