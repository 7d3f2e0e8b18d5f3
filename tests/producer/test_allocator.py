"""The page allocator's placement: random, aligned, never twice, only in free RAM."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmci.core.memory import Range
from vmci.errors import UsageError
from vmci.producer.allocator import PageAllocator

MIB = 1 << 20


def test_take_claim_reserve() -> None:
    a = PageAllocator([Range(0, 16 * MIB)], random.Random(1))
    a.reserve(Range(0, MIB))
    picked = a.take(2 * MIB, 2 * MIB, what="kernel image")
    assert picked % (2 * MIB) == 0 and picked >= MIB
    assert not any(f.start < picked + 2 * MIB and picked < f.end for f in a.free)
    with pytest.raises(UsageError, match=r"the crashkernel at .* is not free guest RAM"):
        a.claim(Range(picked, 4096), "crashkernel")
    with pytest.raises(UsageError, match="not free"):
        a.claim(Range(0, 4096), "page zero")
    a.claim(Range(15 * MIB, MIB), "top")
    with pytest.raises(UsageError, match=r"guest RAM too small for the pool \(0x1000000 bytes\)"):
        a.take(16 * MIB, what="pool")


def test_same_seed_same_picks() -> None:
    def picks(seed: int) -> list[int]:
        a = PageAllocator([Range(0x100000, 63 * MIB)], random.Random(seed))
        return [a.take(0x3000, what="x") for _ in range(20)]

    assert picks(5) == picks(5) != picks(6)


@given(st.integers(0, 2**32), st.lists(st.sampled_from([0x1000, 0x3000, 0x200000]), min_size=1, max_size=30))
def test_picks_are_aligned_disjoint_and_inside(seed: int, sizes: list[int]) -> None:
    ram = [Range(0, 0xA0000), Range(0x100000, 64 * MIB)]
    a = PageAllocator(ram, random.Random(seed))
    got: list[Range] = []
    for size in sizes:
        align = 0x200000 if size == 0x200000 else 0x1000
        r = Range(a.take(size, align, what="x"), size)
        assert r.start % align == 0
        assert any(f.start <= r.start and r.end <= f.end for f in ram)
        assert all(r.end <= o.start or o.end <= r.start for o in got)
        got.append(r)
