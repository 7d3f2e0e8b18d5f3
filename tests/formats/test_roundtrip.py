"""Every writer's output reads back byte-exact: memory, notes, headers (property-based)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmci.core.memory import Range, SparseMemory
from vmci.formats import open_dump
from vmci.formats.elf import write_elf
from vmci.formats.kdump import write_kdump
from vmci.formats.notes import encode_notes, find_desc
from vmci.formats.raw import write_raw

PAGE = 4096


@st.composite
def guests(draw, aligned: bool = True):
    """Random sparse memories: up to 4 ranges with gaps, random bytes written into them."""
    n = draw(st.integers(1, 4))
    ranges, pos = [], draw(st.integers(0, 8)) * PAGE
    for _ in range(n):
        size = draw(st.integers(1, 24)) * PAGE
        if not aligned:
            pos += draw(st.integers(0, 255)) * 16
            size -= draw(st.integers(0, 255)) * 8
        ranges.append(Range(pos, size))
        pos += size + draw(st.integers(1, 40)) * PAGE
    mem = SparseMemory(ranges)
    for _ in range(draw(st.integers(0, 12))):
        r = draw(st.sampled_from(ranges))
        off = draw(st.integers(0, r.size - 1))
        data = draw(st.binary(min_size=1, max_size=min(3 * PAGE, r.size - off)))
        mem.write(r.start + off, data)
    return mem


notes_st = st.lists(
    st.tuples(
        st.sampled_from(["CORE", "QEMU", "VMCOREINFO", "LINUX", "X"]),
        st.integers(0, 7),
        st.binary(max_size=300),
    ),
    max_size=5,
)


def same_memory(a, b) -> None:
    assert list(a.ranges) == list(b.ranges)
    for r in a.ranges:
        assert a.read(r.start, r.size) == b.read(r.start, r.size)


def same_notes(dump, notes) -> None:
    assert [(n.name, n.type, n.desc) for n in dump.notes] == [(a, t, d) for a, t, d in notes]


SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("style", ["qemu-7.2", "qemu-7.1", "kexec"])
@given(mem=guests(aligned=False), notes=notes_st)
@SETTINGS
def test_elf_round_trip(tmp_path: Path, style: str, mem: SparseMemory, notes) -> None:
    path = tmp_path / "core.elf"
    with path.open("wb") as f:
        write_elf(
            f,
            mem,
            encode_notes(notes),
            style="kexec" if style == "kexec" else "qemu",
            section_headers_first=style == "qemu-7.2",
            ehsize_quirk=style == "qemu-7.2",
        )
    with open_dump(path) as d:
        assert d.format == "elf"
        same_memory(mem, d.memory)
        same_notes(d, notes)


@pytest.mark.parametrize("compression", ["zlib", "lzo", "snappy", "zstd", "none"])
@pytest.mark.parametrize("flattened", [False, True])
@given(mem=guests(), notes=notes_st)
@SETTINGS
def test_kdump_round_trip(tmp_path: Path, compression: str, flattened: bool, mem, notes) -> None:
    path = tmp_path / "dump.kdump"
    blob = encode_notes(notes)
    with path.open("wb") as f:
        facts = write_kdump(
            f,
            mem,
            blob,
            compression=compression,
            flattened=flattened,
            vmcoreinfo_span=find_desc(blob, "VMCOREINFO"),
            phys_base=-346030080,
        )
    with open_dump(path) as d:
        assert d.format == ("kdump-flattened" if flattened else "kdump")
        assert d.facts["compression"] == compression
        assert d.facts["phys_base_signed"] == -346030080
        same_memory(mem, d.memory)
        same_notes(d, notes)
        assert [a for a, _ in d.memory.pages()] == [a for a, _ in mem.pages()]
        vmci = next((n[2] for n in notes if n[0] == "VMCOREINFO"), b"")
        assert d.facts.get("vmcoreinfo_text", b"") == vmci
        assert facts["dumpable_pages"] == mem.size // PAGE


@given(mem=guests(aligned=False), base=st.integers(0, 1 << 20))
@SETTINGS
def test_raw_round_trip(tmp_path: Path, mem: SparseMemory, base: int) -> None:
    first = mem.ranges[0].start
    path = tmp_path / "mem.raw"
    with path.open("wb") as f:
        write_raw(f, mem, first)
    with open_dump(path, format="raw", raw_base=first + base) as d:
        for r in mem.ranges:
            assert d.memory.read(r.start + base, r.size) == mem.read(r.start, r.size)


def test_paging_elf_with_pn_xnum(tmp_path: Path) -> None:
    """A paging-mode dump with more than 65535 program headers (PN_XNUM), several virtual
    mappings of the same physical page, and mappings QEMU cannot back (p_offset -1)."""
    mem = SparseMemory([Range(0, 0x200000)])
    mem.write(0x1234, b"mapped many times")
    maps = [(0xFFFF888000000000 + i * PAGE, (i % 512) * PAGE, PAGE) for i in range(70000)]
    maps.append((0xFFFFC90000000000, 0xFEE00000, PAGE))  # MMIO: not in dumped RAM
    path = tmp_path / "paging.elf"
    with path.open("wb") as f:
        info = write_elf(f, mem, encode_notes([("CORE", 1, bytes(336))]), mappings=maps)
    assert info["pn_xnum"]
    with open_dump(path) as d:
        assert d.facts["pn_xnum"] and d.facts["program_headers"] == 70002
        assert any("p_offset -1" in q for q in d.facts["quirks"])
        assert d.memory.read(0x1234, 17) == b"mapped many times"
        assert d.memory.readable(0, 0x200000)
        assert not d.memory.readable(0xFEE00000, 1)
