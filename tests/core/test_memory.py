from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmci.core.memory import Range, SparseMemory, merge_ranges
from vmci.errors import HoleError, UsageError


def test_merge_ranges_joins_touching_and_overlapping():
    assert merge_ranges([Range(10, 5), Range(0, 10), Range(12, 10), Range(40, 0)]) == [Range(0, 22)]


def test_read_across_pages_and_holes():
    m = SparseMemory([Range(0, 0x3000), Range(0x5000, 0x1000)])
    m.write(0xFFE, b"abcd")
    assert m.read(0xFFE, 4) == b"abcd"
    with pytest.raises(HoleError) as e:
        m.read(0x2FFE, 4)
    assert e.value.paddr == 0x3000
    assert m.read(0x2FFE, 4, zero_fill=True) == bytes(4)
    assert m.contains(0x5000, 0x1000) and not m.contains(0x4FFF, 2)
    assert not m.readable(0x2FFF, 2) and m.readable(0x5000, 0x1000)
    with pytest.raises(UsageError):
        m.read(-1, 4)


def test_write_outside_ram_is_refused():
    m = SparseMemory([Range(0, 0x1000)])
    with pytest.raises(HoleError):
        m.write(0xFFF, b"xy")


@given(
    starts=st.lists(st.integers(0, 64), min_size=1, max_size=6, unique=True),
    lengths=st.lists(st.integers(1, 9000), min_size=6, max_size=6),
)
def test_pages_yields_every_whole_page_once(starts, lengths):
    ranges = [Range(s * 0x3000 + (s % 3) * 0x800, ln) for s, ln in zip(starts, lengths, strict=False)]
    m = SparseMemory(ranges)
    pages = [a for a, p in m.pages()]
    expect = sorted({a for r in m.ranges for a in range(-(-r.start // 4096) * 4096, r.end - 4095, 4096)})
    assert pages == expect
    # the generic implementation (through chunks) agrees with the SparseMemory fast path
    generic = [a for a, _ in super(SparseMemory, m).pages()]
    assert generic == expect


def test_chunks_cover_readable_bytes():
    m = SparseMemory([Range(0, 0x5000)])
    m.write(0x10, b"x")
    got = b"".join(bytes(b) for _, b in m.chunks(0x8, 0x4000))
    assert len(got) == 0x4000 - 8 and got[8:9] == b"x"


def test_data_chunks_leave_out_only_pages_never_written():
    m = SparseMemory([Range(0, 0x10000), Range(0x20000, 0x4000)])
    m.write(0x1FFF, b"ab")  # straddles pages 1 and 2
    m.write(0x21000, b"c")
    got = [(a, bytes(b)) for a, b in m.data_chunks()]
    assert [(a, len(b)) for a, b in got] == [(0x1000, 0x2000), (0x21000, 0x1000)]
    assert got[0][1][0xFFF:0x1001] == b"ab" and got[1][1][0] == ord("c")
    # the generic form keeps every readable byte
    generic = b"".join(bytes(b) for _, b in super(SparseMemory, m).data_chunks())
    assert len(generic) == m.size
