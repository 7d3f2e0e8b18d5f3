"""The memory-scan strategy over guest RAM made by the emulated kernel."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import pytest
from conftest import SMALL_KERNEL as SMALL

from vmci.core.memory import Extent, PhysicalMemory, Range, SparseMemory
from vmci.discover import memory_scan as scan_mod
from vmci.discover.memory_scan import scan
from vmci.kernel.vmcoreinfo import build_note
from vmci.producer.linux import KernelLayout, capture_kernel, place_vmcoreinfo, vmcoreinfo_text

MiB = 1 << 20


class BytesMemory(PhysicalMemory):
    """RAM from 0 backed by one bytes object, handed out as views (like an mmap'd dump)."""

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = bytes(data)

    @property
    def ranges(self) -> Sequence[Range]:
        return [Range(0, len(self.data))]

    def extent(self, paddr: int, limit: int) -> Extent:
        if paddr >= len(self.data):
            return Extent(None, limit, "hole")
        n = min(limit, len(self.data) - paddr)
        return Extent(memoryview(self.data)[paddr:paddr + n], n)


def steps(ev: object) -> str:
    return "\n".join(str(s) for s in ev)  # type: ignore[attr-defined]


def test_finds_page_aligned_note_in_64_mib() -> None:
    mem = SparseMemory([Range(0, 64 * MiB)])
    placed = place_vmcoreinfo(mem, SMALL, 0x2345000, 0x2347000)
    f = scan(mem)
    assert f.found and len(f.candidates) == 1 and not f.rejected
    c = f.chosen
    assert c is not None and c.paddr == 0x2345000 and c.note_size == 24 + ((len(placed.text) + 3) & ~3)
    assert c.text is not None and c.text.raw == placed.text
    assert c.data_paddr == 0x2347000
    assert c.facts["uts_confirmed"] is True and c.facts["page_aligned"] is True
    assert not any(s.action == "full pass" for s in f.evidence)  # the fast path sufficed
    assert "[ok] choice" in steps(f.evidence)
    json.dumps(f.to_dict())


def test_finds_unaligned_bss_note_with_the_fallback() -> None:
    mem = SparseMemory([Range(0, 64 * MiB)])
    old = KernelLayout(profile="4.9", kaslr_offset=0x1000000, phys_base=0)
    place_vmcoreinfo(mem, old, 0x2A10234, 0x2A0F010, write_uts=False)  # .bss: 4-byte aligned
    assert not scan(mem, mode="aligned").found
    f = scan(mem)  # auto: falls back to the full pass
    assert f.found and f.chosen is not None and f.chosen.paddr == 0x2A10234
    assert f.chosen.facts["page_aligned"] is False
    assert any(s.action == "full pass" for s in f.evidence)
    assert "4-byte aligned" in steps(f.chosen.evidence)
    assert f.chosen.text is not None and f.chosen.text.phys_base.legacy_symbol
    assert "legacy" in steps(f.chosen.evidence)  # init_uts_ns cannot be checked


def test_kdump_kernel_copy_lists_two_and_picks_the_crashed_kernel() -> None:
    mem = SparseMemory([Range(0, 1 << 30)])
    first = KernelLayout()
    place_vmcoreinfo(mem, first, 0x3FF00000, 0x3FF02000, crashtime=1700000000)
    place_vmcoreinfo(mem, capture_kernel(first, 0x30000000), 0x3C000000, 0x3C002000)
    f = scan(mem, mode="full")
    assert len(f.candidates) == 2 and f.facts["distinct_texts"] == 2
    assert f.chosen is not None and f.chosen.paddr == 0x3FF00000
    assert all(c.facts["uts_confirmed"] for c in f.candidates)  # both kernels are in memory
    why = steps(f.evidence)
    assert "2 distinct VMCOREINFO texts" in why and "CRASHTIME" in why and "KERNELOFFSET 2a000000 vs 0" in why


def test_stale_previous_boot_loses_to_the_kernel_in_memory() -> None:
    mem = SparseMemory([Range(0, 1 << 30)])
    # a previous boot panicked (CRASHTIME) with another KASLR offset; its image is gone
    place_vmcoreinfo(mem, KernelLayout(kaslr_offset=0x1E000000, seed=9), 0x1000000, 0x1002000,
                     crashtime=1600000000, write_uts=False)
    place_vmcoreinfo(mem, KernelLayout(), 0x3FF00000, 0x3FF02000)
    f = scan(mem)
    assert len(f.candidates) == 2
    assert f.chosen is not None and f.chosen.paddr == 0x3FF00000
    stale = next(c for c in f.candidates if c.paddr == 0x1000000)
    assert stale.facts["uts_confirmed"] is False and "stale" in steps(stale.evidence)
    assert "init_uts_ns holds its release" in steps(f.evidence)


def test_identical_copies_are_one_text() -> None:
    mem = SparseMemory([Range(0, 64 * MiB)])
    place_vmcoreinfo(mem, SMALL, 0x2345000, 0x2347000)
    place_vmcoreinfo(mem, SMALL, 0x1000000, 0x1002000)
    f = scan(mem)
    assert len(f.candidates) == 2 and f.facts["distinct_texts"] == 1
    assert "2 copies of the same text" in steps(f.evidence)


@pytest.mark.parametrize("vectorised", [False, True], ids=["re", "numpy"])
def test_garbage_hits_are_rejected_with_evidence(vectorised: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # the regular-expression and the vectorised full search: the same hits, the same evidence
    monkeypatch.setattr(scan_mod, "use_vectorised_search", lambda searched, exhaustive: vectorised)
    mem = SparseMemory([Range(0, 64 * MiB), Range(80 * MiB, MiB)])
    text = vmcoreinfo_text(SMALL)
    good = build_note(text)
    cases = {
        0x100000: b"\x0c" + good[1:],  # namesz 12
        0x200000: good[:8] + b"\x01\0\0\0" + good[12:],  # type 1
        0x300000: good[:4] + b"\0\0\x10\0" + good[8:],  # descsz 1 MiB
        0x400000: good[:4] + b"\0\0\0\0" + good[8:],  # descsz 0
        0x500000: build_note(b"NOTOSRELEASE=1\n"),
        0x600000: build_note(text[:20] + b"\x01" + text[21:]),
        0x700004: good,  # full-pass hit, fine: the control
    }
    for addr, data in cases.items():
        mem.write(addr, data)
    hole = 80 * MiB + MiB - 24 - 8  # descriptor runs off the end of RAM
    mem.write(hole, good[:24] + text[:8])
    mem.write(0x800001, b"VMCOREINFO\0")  # unaligned: ignored by the full pass
    f = scan(mem, mode="full")
    assert [c.paddr for c in f.candidates] == [0x700004]
    reasons = {c.paddr: steps(c.evidence) for c in f.rejected}
    assert set(reasons) == {*(a for a in cases if a != 0x700004), hole}
    assert "n_namesz=12" in reasons[0x100000]
    assert "n_type=1" in reasons[0x200000]
    assert "exceeds" in reasons[0x300000]
    assert "n_descsz=0" in reasons[0x400000]
    assert "not OSRELEASE=" in reasons[0x500000]
    assert "non-printable" in reasons[0x600000]
    assert "not all in the dump" in reasons[hole]
    assert all("[fail]" in r for r in reasons.values())
    assert "1 unaligned" in steps(f.evidence)
    json.dumps(f.to_dict())


def test_nothing_found() -> None:
    mem = SparseMemory([Range(0, 16 * MiB)])
    mem.write(0x1000, b"hello")
    f = scan(mem)
    assert not f.found and f.chosen is None
    assert "[fail] choice" in steps(f.evidence)


def test_text_page_without_its_note() -> None:
    mem = SparseMemory([Range(0, 64 * MiB)])
    placed = place_vmcoreinfo(mem, SMALL, 0x2345000, 0x2347000)
    mem.write(0x2345000, bytes(4132))  # the note page was lost
    f = scan(mem)
    assert f.found and f.chosen is not None and f.chosen.paddr is None
    assert f.chosen.data_paddr == 0x2347000 and f.chosen.text is not None
    assert f.chosen.text.raw == placed.text
    assert "without its note" in steps(f.chosen.evidence)


def test_bytes_backed_memory_and_a_name_across_chunks() -> None:
    size = scan_mod.CHUNK + 4 * MiB
    data = bytearray(size)
    text = vmcoreinfo_text(SMALL)
    hdr = scan_mod.CHUNK - 16  # the name straddles the first chunk's end
    note = build_note(text)
    data[hdr:hdr + len(note)] = note
    page = 0x200000
    data[page:page + len(note)] = note
    data[page + 0x2000:page + 0x2000 + len(text)] = text
    mem = BytesMemory(data)
    aligned = scan(mem, mode="aligned", verify_uts=False)
    assert [c.paddr for c in aligned.candidates] == [page] and aligned.chosen.data_paddr == page + 0x2000
    full = scan(mem, mode="full", verify_uts=False)
    assert [c.paddr for c in full.candidates] == [page, hdr]


def test_progress_callback() -> None:
    mem = SparseMemory([Range(0, 64 * MiB)])
    place_vmcoreinfo(mem, SMALL, 0x2345000, 0x2347000)
    seen: list[tuple[int, int]] = []
    scan(mem, mode="full", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2 * 64 * MiB, 2 * 64 * MiB)
    assert all(a <= b for (a, _), (b, _) in itertools.pairwise(seen))
    assert all(t == 2 * 64 * MiB for _, t in seen)


def test_bad_mode() -> None:
    with pytest.raises(ValueError):
        scan(SparseMemory([Range(0, MiB)]), mode="fast")  # type: ignore[arg-type]


def test_the_vectorised_needle_search_finds_what_a_regular_expression_finds() -> None:
    """Every occurrence at every alignment, at the buffer's edges, in views starting off a word
    boundary, in buffers of every length mod 4 (the oracle: the stdlib's ``re``)."""
    import random
    import re

    from vmci.discover.memory_scan import NEEDLE, find_needle

    oracle = re.compile(re.escape(NEEDLE))
    rnd = random.Random(13)
    for n in [0, 1, 3, 4, 10, 11, 12, 13, 15, 16, 17, 100, 4096, 4099, 262155, 300001]:
        for _ in range(60 if n < 10_000 else 6):
            filler = rnd.choice([b"\0", b"V", b"VMCO", b"OREI", b"VMCOREINFO"])
            buf = bytearray((filler * n)[:n]) if rnd.random() < 0.3 else bytearray(rnd.randbytes(n))
            for _ in range(rnd.randrange(5) if n >= 11 else 0):
                at = rnd.choice([0, n - 11, rnd.randrange(n - 10)])
                buf[at:at + 11] = NEEDLE
            if n >= 11 and rnd.random() < 0.2:  # an occurrence ending on the last byte
                buf[n - 11:] = NEEDLE
            mv = memoryview(bytes(buf))
            for off in {0, min(n, rnd.randrange(1, 4))}:
                assert find_needle(mv[off:]) == [m.start() for m in oracle.finditer(mv[off:])], (n, off)
