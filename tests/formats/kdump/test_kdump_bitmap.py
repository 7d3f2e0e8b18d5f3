"""PFN bitmaps against plain Python sets and counts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vmci.formats.kdump.bitmap import (
    PfnBitmap,
    RankIndex,
    bit_runs,
    clear_masked,
    exclusion_mask,
    set_bits,
)


def bits_of(bitmap: bytes | bytearray, nbits: int) -> set[int]:
    return {i for i in range(min(nbits, len(bitmap) * 8)) if bitmap[i >> 3] >> (i & 7) & 1}


def runs_of(pfns: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in sorted(pfns):
        if out and out[-1][1] == p:
            out[-1] = (out[-1][0], p + 1)
        else:
            out.append((p, p + 1))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_bit_runs_and_rank(seed: int) -> None:
    rnd = random.Random(seed)
    nbits = rnd.randrange(1, 20000)
    # long runs of 0xff and 0x00 (the fast path) between mixed bytes
    bitmap = bytearray(rnd.choice([0xFF, 0, rnd.randrange(256)]) for _ in range((nbits + 7) // 8))
    want = bits_of(bitmap, nbits)
    assert list(bit_runs(bitmap, nbits)) == runs_of(want)
    lo = rnd.randrange(0, nbits)
    assert [r for r in bit_runs(bitmap, nbits, lo & ~7)] == runs_of({p for p in want if p >= lo & ~7})
    index = RankIndex(bytes(bitmap), nbits)
    probes = [0, 1, 7, 8, 4095, 4096, 4097, nbits - 1, nbits, *(rnd.randrange(nbits) for _ in range(50))]
    for pfn in (p for p in probes if p <= nbits):
        assert index.rank(pfn) == sum(1 for p in want if p < pfn), pfn


def test_set_and_clear_bits() -> None:
    bitmap = bytearray(64)
    for lo, hi in [(3, 5), (7, 30), (64, 64), (100, 260), (511, 512)]:
        set_bits(bitmap, lo, hi)
    want = {*range(3, 5), *range(7, 30), *range(100, 260), 511}
    assert bits_of(bitmap, 512) == want
    mask = bytearray(4)
    set_bits(mask, 0, 10)
    clear_masked(bitmap, mask)  # a shorter mask leaves the rest alone
    assert bits_of(bitmap, 512) == want - set(range(10))


def test_pfn_bitmap_from_pfns_bools_and_numpy() -> None:
    pfns = {0, 5, 6, 7, 8, 1000, 4095}
    a = PfnBitmap.from_pfns([*pfns, -1, 5000, 1 << 40], 4100)
    flags = np.zeros(4100, dtype=bool)
    flags[list(pfns)] = True
    b = PfnBitmap.from_bools(flags)
    c = PfnBitmap.from_bools(bytes(flags.astype(np.uint8)))
    assert bits_of(a.bits, 4100) == bits_of(b.bits, 4100) == bits_of(c.bits, 4100) == pfns
    assert len(a) == len(pfns) and 1000 in a and 1001 not in a and -1 not in a and 10**9 not in a
    assert list(a.runs()) == runs_of(pfns)
    a.add(4099)
    assert 4099 in a
    with pytest.raises(IndexError):
        a.add(4100)


def test_exclusion_mask_takes_every_shape() -> None:
    pfns = [1, 2, 3, 900]
    flags = np.zeros(1000, dtype=bool)
    flags[pfns] = True
    packed = PfnBitmap.from_pfns(pfns, 1000)
    shapes = [pfns, iter(pfns), packed, flags, bytes(packed.bits)]
    for shape in shapes:
        assert bits_of(bytes(exclusion_mask(shape, 1000)), 1000) == set(pfns)
    # PFNs beyond the bitmap (or negative) cannot be excluded: no 128 GiB mask for PFN 2**40
    assert bits_of(bytes(exclusion_mask([-1, 5, 1 << 40], 16)), 16) == {5}
