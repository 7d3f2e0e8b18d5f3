"""vmci.kernel.mm: struct page classified as makedumpfile does, for every layout era.

Oracles: the producer's memory map (vmci.producer.mm), whose truth is the plan it carried out
(which pages it made free, cache, user, hugetlb, slab, poisoned, offline), never vmci's reader;
makedumpfile itself on real guests (tests/realworld/test_convert_real.py).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmci.core.memory import Range
from vmci.errors import NotFoundError, UsageError
from vmci.formats import open_dump
from vmci.kernel.mm import (
    PGMM_CACHED,
    DumpLevel,
    PageClass,
    PageLayout,
    memory_model,
    reached_blocks,
    scan_pages,
)
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.kernel.vmem import KernelMemory
from vmci.producer.kernel_layout import KernelLayout
from vmci.producer.linux import vmcoreinfo_text
from vmci.producer.mm import DEFAULT_MIX, KINDS, MemMapTruth, PageBlock, plan_pages, struct_pages
from vmci.producer.scenario import Scenario, build

#: one profile per layout era: compound_dtor/order in the first tail page (4.19-6.2), folio offsets
#: (6.3-6.5), PG_hugetlb in _flags_1 (6.6-6.8), hugetlb page type (6.9+), slab page type and PGTY (6.12)
ERAS = ["4.19", "5.10", "6.1", "6.3", "6.6", "6.9", "6.12"]
LEVELS = [0, 1, 2, 4, 8, 16, 31, 6, 10, 24]
VMEMMAP = 0xFFFFEA0000000000


def layout_for(profile: str) -> tuple[KernelLayout, PageLayout]:
    k = KernelLayout(profile=profile)
    return k, PageLayout.from_vmcoreinfo(VmcoreInfo.parse(vmcoreinfo_text(k)))


def excluded_by_vmci(buf: bytes, pfn0: int, n: int, lay: PageLayout, level: int) -> set[int]:
    starts, ends, _ = reached_blocks(buf, pfn0, n, lay, level)
    return {p for s, e in zip(starts.tolist(), ends.tolist(), strict=True) for p in range(s, e)}


def kinds_of(profile: str) -> list[str]:
    return [k for k in DEFAULT_MIX if k != "offline" or KernelLayout(profile=profile).profile.since(5, 0)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ERAS), st.integers(0, 2**32), st.sampled_from(LEVELS))
def test_every_page_class_in_every_layout(profile: str, seed: int, level: int) -> None:
    """Random memory maps (free blocks of every order, cache, private cache, anonymous, swap cache,
    THP, large cache folios, hugetlb, slab with misleading words, poisoned, offline pages): vmci's
    classification equals the producer's plan, page for page."""
    k, lay = layout_for(profile)
    rng = random.Random(seed)
    n = 4 * PGMM_CACHED
    blocks = plan_pages([Range(0, n * 4096)], rng, kinds=kinds_of(profile))
    buf = struct_pages(k, 0, n, blocks, VMEMMAP)
    truth = MemMapTruth(blocks, VMEMMAP, [0], offline=lay.offline_mapcount is not None)
    assert excluded_by_vmci(buf, 0, n, lay, level) == truth.excluded(level)


@pytest.mark.parametrize(("profile", "kind"),
                         [(p, k) for p in ERAS for k in sorted(KINDS) if k in kinds_of(p) or k == "kernel"])
def test_each_kind_alone(profile: str, kind: str) -> None:
    """One block of each kind at an aligned PFN (order 3 for compound kinds and free, else 0);
    PageOffline exists from 5.0 only."""
    k, lay = layout_for(profile)
    order = 3 if kind in ("free", "thp", "cache_folio", "hugetlb") else 0
    blocks = [PageBlock(8, order, kind)]
    buf = struct_pages(k, 0, PGMM_CACHED, blocks, VMEMMAP)
    for level in (0, 2, 4, 8, 16, 31):
        want = MemMapTruth(blocks, VMEMMAP, [0]).excluded(level)
        assert excluded_by_vmci(buf, 0, PGMM_CACHED, lay, level) == want, (kind, level)


def test_misleading_slab_words_are_not_anonymous_or_free() -> None:
    """6.2+ ``slab.slabs`` sits where ``page.mapping`` is (makedumpfile 5f17bdd); a slab page's
    ``_mapcount`` word may equal the buddy value: ``!isSlab`` keeps both."""
    for profile in ("6.3", "6.12"):
        k, lay = layout_for(profile)
        buf = struct_pages(k, 0, PGMM_CACHED, [PageBlock(4, 0, "slab", tricky=True)], VMEMMAP)
        assert excluded_by_vmci(buf, 0, PGMM_CACHED, lay, 31) == set()


def test_head_in_the_last_slot_of_a_block_is_not_compound() -> None:
    """makedumpfile reads struct page 512 at a time and ignores a head in slot 511 (its first tail
    page is in the next block): such a page counts alone."""
    k, lay = layout_for("6.1")
    buf = bytearray(struct_pages(k, 0, 2 * PGMM_CACHED, [PageBlock(511, 0, "anon")], VMEMMAP))
    size, flags_at = lay.size, lay.flags_at
    flags = int.from_bytes(buf[511 * size + flags_at:511 * size + flags_at + 8], "little")
    buf[511 * size + flags_at:511 * size + flags_at + 8] = (flags | lay.pg_head_mask).to_bytes(8, "little")
    buf[512 * size + 17] = 4  # a first-tail order byte, which makedumpfile never reads here
    assert excluded_by_vmci(bytes(buf), 0, 2 * PGMM_CACHED, lay, DumpLevel.USER) == {511}


def test_impossible_orders() -> None:
    """An order not aligned to the PFN (or >= 64) makes the head a single page; a buddy order at or
    above LENGTH(zone.free_area) leaves the page alone (makedumpfile warns and continues)."""
    k, lay = layout_for("6.1")
    blocks = [PageBlock(8, 3, "thp"), PageBlock(64, 6, "free")]
    buf = bytearray(struct_pages(k, 0, PGMM_CACHED, blocks, VMEMMAP))
    buf[9 * lay.size + 17] = 5  # THP at PFN 8 claims order 5: 8 is not 32-aligned
    private_at = lay.private_at
    assert private_at is not None
    buf[64 * lay.size + private_at] = 11  # LENGTH(zone.free_area) is 11
    assert excluded_by_vmci(bytes(buf), 0, PGMM_CACHED, lay, 31) == {8}


def test_blocks_across_chunks_and_pages_inside_them() -> None:
    """A free block and a THP longer than the array read at once are excluded whole; pages inside a
    block that look excludable themselves are not looked at (the counts stay exact)."""
    k, lay = layout_for("6.1")
    blocks = [PageBlock(0, 10, "free"), PageBlock(1024, 9, "thp")]
    buf = struct_pages(k, 0, 2048, blocks, VMEMMAP)
    starts, ends, cls = reached_blocks(buf[:PGMM_CACHED * lay.size], 0, PGMM_CACHED, lay, 31)
    assert list(zip(starts, ends, cls, strict=True)) == [(0, 1024, PageClass.FREE)]
    starts, _, _ = reached_blocks(buf[PGMM_CACHED * lay.size:2 * PGMM_CACHED * lay.size], PGMM_CACHED,
                                  PGMM_CACHED, lay, 31, covered=1024)
    assert len(starts) == 0


def test_layout_gates_by_key_presence() -> None:
    _, lay = layout_for("6.1")
    assert lay.order_at == 17 and lay.dtor_at == 16 and lay.hugetlb_dtor == 2 and lay.finds_buddies
    _, lay = layout_for("6.3")
    assert lay.order_at == 81 - 64 and lay.dtor_at == 80 - 64
    _, lay = layout_for("6.6")
    assert lay.pg_hugetlb is not None and lay.hugetlb_dtor is None
    _, lay = layout_for("6.12")
    assert lay.pg_slab is None and lay.slab_mapcount is not None and lay.hugetlb_mapcount is not None
    assert lay.scans(0)  # PG_hwpoison is known: poisoned pages go at every level, as makedumpfile does
    text = VmcoreInfo.parse(b"OSRELEASE=6.1.0\nSIZE(page)=64\nOFFSET(page.flags)=0\n")
    with pytest.raises(NotFoundError, match="mapping"):
        PageLayout.from_vmcoreinfo(text)
    bare = PageLayout.from_vmcoreinfo(VmcoreInfo.parse(
        b"OSRELEASE=6.1.0\nSIZE(page)=64\nOFFSET(page.flags)=0\nOFFSET(page.mapping)=24\n"))
    assert not bare.finds_buddies and not bare.scans(DumpLevel.FREE | DumpLevel.ZERO)
    assert bare.scans(DumpLevel.CACHE)


# -- whole guests: mem_section, vmemmap, page tables ----------------------------------------------------


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def guest(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from vmci.producer.qemu_dump import guest_note, qemu_notes, write_qemu_elf

    g = build(Scenario(ram=48 << 20, kernel=request.param, seed=11, mem_map=True))
    path = tmp_path_factory.mktemp("mm") / f"{request.param}.elf"
    with path.open("wb") as f:
        write_qemu_elf(f, g.mem, qemu_notes(g.cpus, guest_note(g.mem, g.vmcoreinfo_device)))
    return g, path


def test_scan_of_a_whole_guest(guest) -> None:  # type: ignore[no-untyped-def]
    g, path = guest
    with open_dump(path) as d:
        kmem = KernelMemory.from_dump(d, VmcoreInfo.parse(g.placed.text))
        model = memory_model(kmem, 1 << 20)
        assert model.model == "sparsemem-extreme" and [m.section for m in model.maps] == g.mem_map.sections
        assert model.maps[0].mem_map == g.mem_map.vmemmap
        for level in (2, 8, 16, 31):
            scan = scan_pages(kmem, d.memory.ranges, level, chunk_pages=PGMM_CACHED)
            got = set(np.flatnonzero(np.unpackbits(np.frombuffer(bytes(scan.excluded.bits), np.uint8),
                                                   bitorder="little")).tolist())
            assert got == g.mem_map.excluded(level), level
            assert sum(scan.counts.values()) == len(got)
            assert scan.unreadable == 0 and scan.scanned > 10000


def test_mem_section_as_a_pointer_and_broken(guest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SYMBOL(mem_section) naming the pointer to the root array (as a vmlinux gives it on 4.15+)
    is followed one level; a root array that holds nothing is refused."""
    g, _ = guest
    text = g.placed.text.decode()
    ms = VmcoreInfo.parse(g.placed.text).symbol("mem_section")
    pointer_va = g.kernel.runtime("mem_section")  # an image variable holding the root array's address
    g.mem.write(g.kernel.kernel_paddr(pointer_va), ms.to_bytes(8, "little"))
    moved = text.replace(f"SYMBOL(mem_section)={ms:x}", f"SYMBOL(mem_section)={pointer_va:x}")
    other = tmp_path / "pointer.elf"
    from vmci.producer.qemu_dump import write_qemu_elf

    with other.open("wb") as f:
        write_qemu_elf(f, g.mem, b"")
    with open_dump(other) as d:
        kmem = KernelMemory.from_dump(d, VmcoreInfo.parse(moved.encode()))
        model = memory_model(kmem, 1 << 20)
        assert model.how == "SYMBOL(mem_section) points at the root array"
        nowhere = text.replace(f"SYMBOL(mem_section)={ms:x}", f"SYMBOL(mem_section)={ms + 0x800:x}")
        kmem = KernelMemory.from_dump(d, VmcoreInfo.parse(nowhere.encode()))
        with pytest.raises(NotFoundError, match="does not validate"):
            memory_model(kmem, 1 << 20)
        with pytest.raises(UsageError):
            scan_pages(kmem, d.memory.ranges, 32)
