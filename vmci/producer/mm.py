"""The guest kernel's memory map: a ``struct page`` for every page frame, as the page allocator,
the page cache, anonymous memory, THP, hugetlbfs, slab, memory failure and ballooning leave it,
in the layout of the kernel profile, reached through ``mem_section`` (SPARSEMEM_EXTREME +
VMEMMAP, as x86_64 and arm64 build it: ``sparse_init``, ``__populate_section_memmap``; arm64's
``vmemmap`` is ``VMEMMAP_START`` offset by ``PHYS_OFFSET``'s PFN, and a PFN counts the guest's
granule).

What each kind of page looks like (``include/linux/page-flags.h``, ``mm_types.h`` of each era):

* free: the first page of a buddy block has ``_mapcount`` = ``PAGE_BUDDY_MAPCOUNT_VALUE`` (the
  page type of 6.12, written in the same word) and ``private`` = the block's order;
* page cache: ``PG_lru``, ``mapping`` an ``address_space`` (``PG_private`` and ``private`` when
  buffers are attached); a large folio is a compound page;
* anonymous: ``mapping`` = ``anon_vma | PAGE_MAPPING_ANON``; THP is a compound page;
* hugetlbfs: a compound page marked by era: ``HUGETLB_PAGE_DTOR`` in the first tail page's
  ``compound_dtor`` (before 6.3) or ``folio._folio_dtor`` (6.3-6.5), ``PG_hugetlb`` in
  ``folio._flags_1`` (6.6-6.8), ``PAGE_HUGETLB_MAPCOUNT_VALUE`` in the head's page type (6.9+);
* compound pages: the head has ``PG_head``; every tail ``compound_head = head | 1``; the order sits
  in the first tail page (``compound_order`` / ``_folio_order``, or the low byte of ``_flags_1``
  from 6.6);
* slab: ``PG_slab`` (``PAGE_SLAB_MAPCOUNT_VALUE`` from 6.10); its ``mapping`` and ``_mapcount``
  words belong to ``struct slab`` and may hold anything (the rules must not mistake them);
* hardware-poisoned: ``PG_hwpoison``; logically offline (balloon): ``PAGE_OFFLINE_MAPCOUNT_VALUE``
  (5.0+);
* everything else (kernel text, page tables, firmware, the memory map itself): no flags.

The truth (:meth:`MemMapTruth.excluded`) is what those pages are, by makedumpfile's dump-level
classes, written from the plan, never from a reader.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from vmci.core.memory import PAGE_SIZE, Range, SparseMemory
from vmci.errors import UsageError
from vmci.producer.kernel_layout import KernelLayout

MB2 = 2 << 20
_U64 = (1 << 64) - 1
#: every kind of page the plan knows, with the dump-level bits that drop it (0: never; -1: always)
KINDS: dict[str, int] = {
    "kernel": 0, "slab": 0, "free": 16, "cache": 2 | 4, "cache_private": 4, "anon": 8, "swapcache": 8,
    "thp": 8, "cache_folio": 2 | 4, "hugetlb": 8, "hwpoison": -1, "offline": -1,
}
#: kinds that are compound pages (order >= 1)
COMPOUND = frozenset({"thp", "cache_folio", "hugetlb"})
_ANON = 0xFFFF888012340000 | 1  # anon_vma | PAGE_MAPPING_ANON
_FILE = 0xFFFF888023450000  # an address_space
_HUGETLBFS = 0xFFFF888034560000
_SLAB_CACHE = 0xFFFF888045670000
_BUFFERS = 0xFFFF888056780000
_TAIL_MAPPING = 0x400  # poison in a tail page's mapping (TAIL_MAPPING)
_COMPOUND_PAGE_DTOR, _HUGETLB_DTOR, _TRANSHUGE_DTOR = 1, 2, 3


@dataclass(frozen=True)
class PageBlock:
    """``1 << order`` page frames from ``pfn`` (aligned), all of one kind."""

    pfn: int
    order: int
    kind: str
    tricky: bool = False
    """A slab page whose ``struct slab`` words look like a buddy's ``_mapcount`` and (6.2+) an
    anonymous ``mapping`` (the ``!isSlab`` guards of makedumpfile's rules must keep it)."""

    @property
    def end(self) -> int:
        return self.pfn + (1 << self.order)


@dataclass
class MemMapTruth:
    """What the producer put in the memory map."""

    blocks: list[PageBlock]
    vmemmap: int
    sections: list[int]
    """Present section numbers."""
    struct_pages: list[Range] = field(default_factory=list)
    """Where the ``struct page`` arrays are in guest-physical memory."""
    hwpoison: bool = True
    offline: bool = True
    """Whether the kernel exports what identifies offline pages (``PAGE_OFFLINE_MAPCOUNT_VALUE``)."""
    page_size: int = PAGE_SIZE
    """The guest's page: PFNs count it."""

    def excluded(self, level: int) -> set[int]:
        """The PFNs makedumpfile's dump level ``level`` drops, from the plan (zero pages aside)."""
        out: set[int] = set()
        for b in self.blocks:
            bits = KINDS[b.kind]
            if (bits == -1 and (b.kind != "offline" or self.offline)) or (bits > 0 and level & bits):
                out.update(range(b.pfn, b.end))
        return out

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for b in self.blocks:
            counts[b.kind] = counts.get(b.kind, 0) + (1 << b.order)
        out: dict[str, Any] = {"vmemmap": self.vmemmap, "sections": self.sections, "pages_by_kind": counts,
                               "struct_pages": [[r.start, r.size] for r in self.struct_pages]}
        if self.page_size != PAGE_SIZE:  # arm64's larger granules (x86 truths stay as they were)
            out["page_size"] = self.page_size
        return out


#: how often each kind is picked for a free stretch (the rest of RAM stays free)
DEFAULT_MIX: dict[str, float] = {
    "free": 0.50, "cache": 0.10, "cache_private": 0.05, "anon": 0.10, "swapcache": 0.02, "thp": 0.04,
    "cache_folio": 0.02, "hugetlb": 0.03, "slab": 0.10, "hwpoison": 0.01, "offline": 0.03,
}


def plan_pages(free: Iterable[Range], rng: random.Random, *, mix: dict[str, float] | None = None,
               max_order: int = 10, kinds: Iterable[str] | None = None,
               page_size: int = PAGE_SIZE) -> list[PageBlock]:
    """Cut the free RAM into aligned blocks of ``page_size`` pages and give each a kind (compound
    kinds get order >= 1, single-page kinds order 0, free blocks any order the alignment allows)."""
    weights = dict(mix or DEFAULT_MIX)
    if kinds is not None:
        allowed = set(kinds)
        weights = {k: w for k, w in weights.items() if k in allowed}
    names, w = list(weights), list(weights.values())
    blocks: list[PageBlock] = []
    for r in free:
        pfn, end = -(-r.start // page_size), r.end // page_size
        while pfn < end:
            kind = rng.choices(names, w)[0]
            room = max_order
            while room and (pfn & ((1 << room) - 1) or pfn + (1 << room) > end):
                room -= 1
            if kind in COMPOUND:
                if room < 1:
                    kind = "free"
                    order = 0
                else:
                    order = rng.randint(1, min(room, 9))
            elif kind == "free":
                order = rng.randint(0, room)
            else:
                order = 0
            blocks.append(PageBlock(pfn, order, kind, tricky=kind == "slab" and rng.random() < 0.3))
            pfn += 1 << order
    return blocks


def kernel_keys(layout: KernelLayout) -> dict[str, int]:
    """The ``SIZE``/``OFFSET``/``NUMBER``/``LENGTH`` values of the text the producer's kernel writes
    for ``layout`` (one source: what the guest exports is what its memory map follows)."""
    from vmci.producer.linux import vmcoreinfo_text

    out: dict[str, int] = {}
    for line in vmcoreinfo_text(layout).decode().splitlines():
        key, _, value = line.partition("=")
        if key.startswith(("SIZE(", "OFFSET(", "NUMBER(", "LENGTH(")):
            try:
                out[key] = int(value, 0)
            except ValueError:
                continue
    return out


def struct_pages(layout: KernelLayout, pfn0: int, n: int, blocks: Iterable[PageBlock], vmemmap: int,
                 keys: dict[str, int] | None = None, byteorder: str = "little") -> bytes:
    """The ``struct page`` array of PFNs ``[pfn0, pfn0 + n)`` with ``blocks`` applied, in the
    layout the kernel's text (``keys``, default :func:`kernel_keys`) describes."""
    import numpy as np

    k = keys if keys is not None else kernel_keys(layout)
    size = k["SIZE(page)"]
    arr = np.zeros((n, size), dtype=np.uint8)

    def put(idx: Any, offset: int, value: int, width: int = 8) -> None:
        raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, byteorder)  # type: ignore[arg-type]
        arr[idx, offset:offset + width] = np.frombuffer(raw, dtype=np.uint8)

    flags_at, mapping_at = k["OFFSET(page.flags)"], k["OFFSET(page.mapping)"]
    mapcount_at, private_at = k["OFFSET(page._mapcount)"], k["OFFSET(page.private)"]
    head_at, refcount_at = k["OFFSET(page.compound_head)"], k["OFFSET(page._refcount)"]
    put(slice(None), mapcount_at, -1, 4)  # page_mapcount() == 0
    dflt = layout.value
    bit = {f: 1 << k.get(f"NUMBER(PG_{f})", dflt(f"NUMBER(PG_{f})"))
           for f in ("lru", "private", "swapcache", "swapbacked", "hwpoison")}
    head_mask = k["NUMBER(PG_head_mask)"]
    buddy = k["NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"]
    offline = k.get("NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)", -257)
    slab_type = k.get("NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)")
    hugetlb_type = k.get("NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)")
    pg_hugetlb = k.get("NUMBER(PG_hugetlb)")
    if "OFFSET(folio._folio_order)" in k:
        order_at = k["OFFSET(folio._folio_order)"] - size
        dtor_at: int | None = k["OFFSET(folio._folio_dtor)"] - size
    else:
        order_at = k.get("OFFSET(page.compound_order)", -1)
        dtor_at = k.get("OFFSET(page.compound_dtor)")
    kinds = {
        "cache": (bit["lru"], _FILE, 0), "cache_folio": (bit["lru"], _FILE, 0),
        "cache_private": (bit["lru"] | bit["private"], _FILE, _BUFFERS),
        "anon": (bit["lru"] | bit["swapbacked"], _ANON, 0), "thp": (bit["lru"] | bit["swapbacked"], _ANON, 0),
        "swapcache": (bit["swapcache"] | bit["swapbacked"], _ANON, 0), "hugetlb": (0, _HUGETLBFS, 0),
        "hwpoison": (bit["hwpoison"], 0, 0), "offline": (0, 0, 0),
    }
    for b in blocks:
        lo, hi = max(b.pfn, pfn0), min(b.end, pfn0 + n)
        if lo >= hi or b.kind == "kernel":
            continue
        i0 = lo - pfn0
        head_here = b.pfn >= pfn0
        if b.kind == "free":
            if head_here:
                put(i0, mapcount_at, buddy, 4)
                put(i0, private_at, b.order)
            continue
        if b.kind == "slab":
            flags = 0 if slab_type is not None else 1 << k["NUMBER(PG_slab)"]
            # struct slab's words: since 6.2 slab.slabs shares page.mapping's place (an odd count
            # looks anonymous: kernel commit 130d4df57390, makedumpfile 5f17bdd)
            odd = b.tricky and layout.profile.since(6, 2)
            mapping, private = _SLAB_CACHE | (1 if odd else 0), 0
        else:
            flags, mapping, private = kinds[b.kind]
        compound = b.order > 0
        if head_here:
            put(i0, flags_at, flags | (head_mask if compound else 0))
            put(i0, mapping_at, mapping)
            put(i0, private_at, private)
            put(i0, refcount_at, 1, 4)
            if b.kind == "offline":
                put(i0, mapcount_at, offline, 4)
            elif b.kind == "slab" and (slab_type is not None or b.tricky):
                put(i0, mapcount_at, slab_type if slab_type is not None else buddy, 4)
            elif b.kind == "hugetlb" and hugetlb_type is not None:
                put(i0, mapcount_at, hugetlb_type, 4)
            elif b.kind in ("anon", "thp", "cache", "cache_folio", "cache_private", "swapcache"):
                put(i0, mapcount_at, 0, 4)
        if not compound:
            continue
        first_tail = b.pfn + 1
        t0, t1 = max(first_tail, pfn0) - pfn0, hi - pfn0
        if t0 < t1:
            put(slice(t0, t1), head_at, (vmemmap + b.pfn * size) | 1)
            put(slice(t0, t1), mapping_at, _TAIL_MAPPING)
        if pfn0 <= first_tail < pfn0 + n:
            t = first_tail - pfn0
            if hugetlb_type is not None or pg_hugetlb is not None:  # 6.6+: order in folio._flags_1
                f1 = b.order
                if b.kind == "hugetlb" and hugetlb_type is None and pg_hugetlb is not None:
                    f1 |= 1 << pg_hugetlb
                put(t, flags_at, f1)
            else:
                arr[t, order_at] = b.order
                if dtor_at is not None:
                    dtor = {"hugetlb": _HUGETLB_DTOR, "thp": _TRANSHUGE_DTOR}.get(b.kind, _COMPOUND_PAGE_DTOR)
                    arr[t, dtor_at] = dtor
    return arr.tobytes()


def write_mem_map(mem: SparseMemory, layout: KernelLayout, map_range: Callable[[int, int, int, int], None],
                  take: Callable[[int, int, str], int], ram: list[Range],
                  plan: Callable[[], list[PageBlock]], *, byteorder: str = "little") -> MemMapTruth:
    """Build ``mem_section`` and the ``struct page`` arrays of every RAM section into ``mem``.

    ``take(size, align, what)`` allocates guest RAM (the kernel's memblock); the arrays are taken
    first, then ``plan()`` decides what the remaining RAM holds.  ``map_range(va, pa, size,
    max_page)`` maps each array at its place after ``layout.mem_map_base`` (``vmemmap``) in the
    kernel's tables (the caller flushes them); the root array is the page at
    ``layout.mem_section_paddr`` (4.15+: ``SYMBOL(mem_section)`` is its direct-map address).
    PFNs count ``layout.page_size``.
    """
    if not layout.profile.since(4, 15):
        raise UsageError("the producer builds mem_section as 4.15+ allocates it "
                         "(kernel profile 4.19 or later)")
    v = layout.value
    page = layout.page_size
    size = v("SIZE(page)")
    sec_size, sec_off = v("SIZE(mem_section)"), v("OFFSET(mem_section.section_mem_map)")
    pfn_shift = v("NUMBER(SECTION_SIZE_BITS)") - (page.bit_length() - 1)
    per_section = 1 << pfn_shift
    per_root = page // sec_size
    spans: dict[int, tuple[int, int]] = {}  # section -> [first pfn, end pfn) of its populated memmap
    for r in ram:
        lo, hi = -(-r.start // page), r.end // page
        pfn = lo
        while pfn < hi:
            nr = pfn >> pfn_shift
            end = min(hi, (nr + 1) << pfn_shift)
            a, b = spans.get(nr, (nr << pfn_shift, nr << pfn_shift))
            spans[nr] = (a, max(b, end))
            pfn = end
    roots: dict[int, int] = {}
    arrays: dict[int, tuple[int, int]] = {}  # section -> (paddr, pages in the array)
    vmemmap = layout.mem_map_base
    for nr, (a, b) in sorted(spans.items()):
        root = nr // per_root
        if root not in roots:
            roots[root] = take(page, page, f"mem_section root {root}")
        n = min(per_section, -(-(b - a) // 512) * 512)  # whole PGMM_CACHED blocks, as readers read
        nbytes = -(-n * size // page) * page
        pa = take(nbytes, MB2 if nbytes == MB2 else page, f"memmap of section {nr}")
        arrays[nr] = (pa, n)
        map_range((vmemmap + a * size) & _U64, pa, nbytes, MB2 if nbytes == MB2 and pa % MB2 == 0 else page)
        coded = vmemmap  # mem_map - first_pfn * SIZE(page): the same for every section with VMEMMAP
        mem.write(roots[root] + (nr % per_root) * sec_size + sec_off,
                  (coded | 3).to_bytes(8, byteorder))  # type: ignore[arg-type]
    for root, pa in roots.items():
        mem.write(layout.mem_section_paddr + 8 * root,
                  ((layout.direct_map + pa) & _U64).to_bytes(8, byteorder))  # type: ignore[arg-type]
    blocks = plan()
    keys = kernel_keys(layout)
    by_section: dict[int, list[PageBlock]] = {}
    for blk in blocks:
        for nr in range(blk.pfn >> pfn_shift, ((blk.end - 1) >> pfn_shift) + 1):
            by_section.setdefault(nr, []).append(blk)
    for nr, (pa, n) in arrays.items():
        mem.write(pa, struct_pages(layout, nr << pfn_shift, n, by_section.get(nr, []), vmemmap, keys,
                                   byteorder))
    return MemMapTruth(blocks, vmemmap, sorted(spans), [Range(pa, -(-n * size // page) * page)
                                                       for pa, n in arrays.values()],
                       offline="NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)" in keys, page_size=page)


def fill_pages(mem: SparseMemory, blocks: Iterable[PageBlock], rng: random.Random,
               page_size: int = PAGE_SIZE) -> None:
    """Give used pages content (a page of a process or a file is rarely all zeros): a few bytes at
    a random place of every page that is not free, offline or poisoned."""
    for b in blocks:
        if b.kind in ("free", "offline", "hwpoison", "kernel"):
            continue
        for pfn in range(b.pfn, b.end):
            mem.write(pfn * page_size + rng.randrange(0, page_size - 16, 8),
                      f"{b.kind}:{pfn:x}".encode()[:16])


__all__ = ["COMPOUND", "DEFAULT_MIX", "KINDS", "MemMapTruth", "PageBlock", "fill_pages", "kernel_keys",
           "plan_pages", "struct_pages", "write_mem_map"]
