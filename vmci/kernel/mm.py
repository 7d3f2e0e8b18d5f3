"""Linux memory management from the VMCOREINFO alone: where ``struct page`` lives and what each
page is, as makedumpfile decides it for its dump levels.

Three layers, drgn-helpers style:

* :class:`PageLayout`: ``struct page`` and the page flags as the text describes them
  (``SIZE(page)``, ``OFFSET(page.*)``, ``NUMBER(PG_*)``, the ``*_MAPCOUNT_VALUE`` numbers), with
  each rule gated by the presence of its key, as makedumpfile gates it, so one reader serves
  4.19 to 6.12 layouts (the compound order and destructor in the first tail page before 6.3,
  ``folio._folio_order`` in 6.3-6.5, ``PG_hugetlb`` and ``_flags_1`` from 6.6,
  ``PAGE_HUGETLB_MAPCOUNT_VALUE`` from 6.9, ``PAGE_SLAB_MAPCOUNT_VALUE`` instead of ``PG_slab``
  from 6.10, the ``PGTY_*`` page types of 6.12).
* :func:`mem_map_sections`: the ``struct page`` arrays (``mem_map``) per SPARSEMEM section
  (SPARSEMEM, SPARSEMEM_EXTREME with the root array or a pointer to it, SPARSEMEM_VMEMMAP, whose
  encoded ``section_mem_map`` is the same formula) or the one FLATMEM array: makedumpfile's
  ``get_mm_sparsemem``/``validate_mem_section``/``nr_to_section``/``section_mem_map_addr``/
  ``sparse_decode_mem_map`` in ``makedumpfile.c``.
* :func:`scan_pages`: every ``struct page`` read in chunks through the kernel's page tables and
  classified with numpy, whole arrays at a time, into a :class:`~vmci.formats.kdump.bitmap.PfnBitmap`
  of excluded PFNs (64 M PFNs cost 8 MiB).  The rules and their order are those of makedumpfile's
  ``__exclude_unnecessary_pages`` (with ``page_is_buddy_v3``, ``is_cache_page``, ``isAnon``,
  ``isSlab``, ``isHugetlb``, ``isOffline``, ``isHWPOISON``): compound tails are skipped, a free
  buddy block excludes ``1 << page.private`` pages, any other match ``1 << compound_order``
  (a whole THP or hugetlb folio), and pages inside a block already excluded are not looked at.

Zero pages (dump level 1) are decided by content while pages are copied, not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntFlag
from typing import TYPE_CHECKING, Any

from vmci.core.memory import Range
from vmci.errors import MemoryReadError, NotFoundError, UsageError, VmciError
from vmci.formats.kdump.bitmap import PfnBitmap, set_bits

if TYPE_CHECKING:
    import numpy as np

    from vmci.kernel.vmcoreinfo import VmcoreInfo
    from vmci.kernel.vmem import KernelMemory


class DumpLevel(IntFlag):
    """makedumpfile's dump-level bits (``DL_EXCLUDE_*`` in ``makedumpfile.h``)."""

    ZERO = 1
    """Pages filled with zeros (decided by content)."""
    CACHE = 2
    """Page-cache pages without private data (``PG_private`` clear)."""
    CACHE_PRIVATE = 4
    """Every page-cache page, private data or not."""
    USER = 8
    """Anonymous (user process) pages and hugetlbfs pages."""
    FREE = 16
    """Free pages of the buddy allocator."""


MAX_LEVEL = 31

#: makedumpfile reads ``struct page`` in blocks of this many PFNs (``PGMM_CACHED``); a compound
#: head in a block's last slot is not recognised (its first tail page is in the next block).
PGMM_CACHED = 512
#: ``SECTION_MARKED_PRESENT`` and the low bits of ``section_mem_map`` that are flags
#: (``SECTION_MAP_LAST_BIT`` is ``1 << 5`` since 5.12; makedumpfile masks five bits for every kernel).
SECTION_MARKED_PRESENT = 1
SECTION_MAP_FLAG_BITS = 5

_RELEASE = re.compile(r"(\d+)\.(\d+)")


class PageClass(IntFlag):
    """Why a page is excluded: the dump-level classes, plus the two makedumpfile always drops."""

    CACHE = 2
    CACHE_PRIVATE = 4
    USER = 8
    FREE = 16
    HWPOISON = 32
    """``PG_hwpoison`` set: the memory failed; reading it may fault."""
    OFFLINE = 64
    """Logically offline (``PageOffline``: ballooned out, unplugged)."""


@dataclass(frozen=True)
class PageLayout:
    """``struct page`` and the page flags, from the VMCOREINFO.

    Offsets are bytes into one ``struct page``; ``order_at``/``dtor_at`` are offsets into the
    *first tail page* (the next ``struct page``) with their widths; ``None`` means the text lacks
    the key, which turns the rule that needs it off (as makedumpfile's ``NOT_FOUND_*`` does).
    """

    size: int
    flags_at: int
    mapping_at: int
    mapcount_at: int | None
    private_at: int | None
    compound_head_at: int | None
    order_at: int | None
    order_width: int
    dtor_at: int | None
    dtor_width: int
    pg_lru: int | None
    pg_private: int | None
    pg_swapcache: int | None
    pg_swapbacked: int | None
    pg_slab: int | None
    pg_hwpoison: int | None
    pg_head_mask: int | None
    pg_hugetlb: int | None
    buddy_mapcount: int | None
    offline_mapcount: int | None
    slab_mapcount: int | None
    hugetlb_mapcount: int | None
    unaccepted_mapcount: int | None
    hugetlb_dtor: int | None
    max_order: int | None
    """``LENGTH(zone.free_area)``: a buddy order at or above it is corrupt."""
    pointer_size: int = 8
    byteorder: str = "little"
    release: tuple[int, int] | None = None

    @classmethod
    def from_vmcoreinfo(cls, text: VmcoreInfo, *, pointer_size: int = 8,
                        byteorder: str = "little") -> PageLayout:
        """The layout the text describes; raises :class:`~vmci.errors.NotFoundError` when it lacks
        the keys every rule needs (``SIZE(page)``, ``OFFSET(page.flags)``, ``OFFSET(page.mapping)``,
        as makedumpfile's ``get_mem_type`` requires with ``OFFSET(page._refcount)``)."""
        size = text.size("page")
        flags_at = text.offset("page", "flags")
        mapping_at = text.offset("page", "mapping")
        missing = [k for k, v in (("SIZE(page)", size), ("OFFSET(page.flags)", flags_at),
                                  ("OFFSET(page.mapping)", mapping_at)) if v is None]
        if missing:
            raise NotFoundError(f"the VMCOREINFO does not describe struct page (no {', '.join(missing)})")
        assert size is not None and flags_at is not None and mapping_at is not None
        m = _RELEASE.match(text.osrelease or "")
        release = (int(m.group(1)), int(m.group(2))) if m else None
        old = release is not None and release < (4, 16)  # makedumpfile: u16 order and dtor before 4.16
        # init_compound_offset(): folio._folio_order (6.3+) is an offset into the folio, i.e. past
        # the head page; page.compound_order (4.4-6.2) is already the tail page's field
        order_at: int | None = None
        dtor_at: int | None = None
        fo = text.offset("folio", "_folio_order")
        fd = text.offset("folio", "_folio_dtor")
        if fo is not None:
            order_at = fo - size
        elif text.offset("page", "compound_order") is not None:
            order_at = text.offset("page", "compound_order")
        elif release is not None and release < (4, 4):
            lru, prev = text.offset("page", "lru"), text.offset("list_head", "prev")
            order_at = lru + prev if lru is not None and prev is not None else None
        if fd is not None:
            dtor_at = fd - size
        elif text.offset("page", "compound_dtor") is not None:
            dtor_at = text.offset("page", "compound_dtor")
        elif release is not None and release < (4, 4):
            lru, nxt = text.offset("page", "lru"), text.offset("list_head", "next")
            dtor_at = lru + nxt if lru is not None and nxt is not None else None
        dtor_width = 1 if not old else (2 if release is not None and release >= (4, 4) else pointer_size)
        return cls(
            size=size, flags_at=flags_at, mapping_at=mapping_at,
            mapcount_at=text.offset("page", "_mapcount"), private_at=text.offset("page", "private"),
            compound_head_at=text.offset("page", "compound_head"),
            order_at=order_at or None, order_width=2 if old else 1,
            dtor_at=dtor_at or None, dtor_width=dtor_width,
            pg_lru=text.number("PG_lru"), pg_private=text.number("PG_private"),
            pg_swapcache=text.number("PG_swapcache"), pg_swapbacked=text.number("PG_swapbacked"),
            pg_slab=text.number("PG_slab"), pg_hwpoison=text.number("PG_hwpoison"),
            pg_head_mask=text.number("PG_head_mask"), pg_hugetlb=text.number("PG_hugetlb"),
            buddy_mapcount=text.number("PAGE_BUDDY_MAPCOUNT_VALUE"),
            offline_mapcount=text.number("PAGE_OFFLINE_MAPCOUNT_VALUE"),
            slab_mapcount=text.number("PAGE_SLAB_MAPCOUNT_VALUE"),
            hugetlb_mapcount=text.number("PAGE_HUGETLB_MAPCOUNT_VALUE"),
            unaccepted_mapcount=text.number("PAGE_UNACCEPTED_MAPCOUNT_VALUE"),
            hugetlb_dtor=text.number("HUGETLB_PAGE_DTOR"), max_order=text.length("zone.free_area"),
            pointer_size=pointer_size, byteorder=byteorder, release=release,
        )

    @property
    def finds_buddies(self) -> bool:
        """Free pages can be told from ``struct page`` (makedumpfile's ``setup_page_is_buddy``
        picks ``page_is_buddy_v3``); otherwise it walks the zones' free lists, which vmci does not."""
        return None not in (self.private_at, self.mapcount_at, self.buddy_mapcount)

    def scans(self, level: int) -> bool:
        """Whether makedumpfile reads ``struct page`` at ``level`` (``create_2nd_bitmap``): for the
        cache and user classes, for free pages it can identify, and whenever ``PG_hwpoison`` is
        known (hardware-poisoned and offline pages are dropped at every level)."""
        return bool(level & (DumpLevel.CACHE | DumpLevel.CACHE_PRIVATE | DumpLevel.USER)
                    or self.pg_hwpoison is not None or (level & DumpLevel.FREE and self.finds_buddies))


@dataclass(frozen=True)
class MemMap:
    """The ``struct page`` array of PFNs ``[pfn_start, pfn_end)``, at virtual ``mem_map``."""

    section: int
    pfn_start: int
    pfn_end: int
    mem_map: int


@dataclass
class MemoryModel:
    """How the kernel keeps ``struct page``: the model and the arrays found."""

    model: str
    """``sparsemem-extreme``, ``sparsemem`` or ``flatmem``."""
    maps: list[MemMap]
    how: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def max_pfn(self) -> int:
        """The end of the last array (makedumpfile cuts ``max_mapnr`` there)."""
        return max((m.pfn_end for m in self.maps), default=0)


def _is_kvaddr(addr: int, pointer_size: int) -> bool:
    # kernel addresses are in the upper half on every architecture vmci translates
    return addr >> (8 * pointer_size - 1) == 1


def memory_model(kmem: KernelMemory, max_mapnr: int) -> MemoryModel:
    """The ``struct page`` arrays covering PFNs below ``max_mapnr``; raises
    :class:`~vmci.errors.NotFoundError` when the VMCOREINFO gives no memory model or the
    ``mem_section`` it names does not validate (makedumpfile ``get_mem_map``)."""
    size = kmem.size("page")
    if size is None:
        raise NotFoundError("the VMCOREINFO has no SIZE(page)")
    ms = kmem.symbol("mem_section")
    if ms is not None and kmem.size("mem_section") is not None \
            and kmem.offset("mem_section", "section_mem_map") is not None:
        return _sparsemem(kmem, ms, size, max_mapnr)
    mm = kmem.symbol("mem_map")
    if mm is not None:
        base = kmem.read_pointer(mm)
        return MemoryModel("flatmem", [MemMap(0, 0, max_mapnr, base)], "SYMBOL(mem_map) points at the array")
    raise NotFoundError("the VMCOREINFO names no memory model (no SYMBOL(mem_section) with its SIZE and "
                        "OFFSET, no SYMBOL(mem_map))")


def _sparsemem(kmem: KernelMemory, sym: int, page_size_of_struct: int, max_mapnr: int) -> MemoryModel:
    arch = kmem.arch
    ps = kmem.pointer_size
    sec_size = kmem.size("mem_section") or 0
    sec_off = kmem.offset("mem_section", "section_mem_map") or 0
    page_shift = (kmem.page_size - 1).bit_length()
    section_bits = kmem.number("SECTION_SIZE_BITS") or arch.section_size_bits
    physmem_bits = kmem.number("MAX_PHYSMEM_BITS")
    if physmem_bits is None and arch.max_physmem_bits is not None:
        physmem_bits = arch.max_physmem_bits[1 if kmem.tables.va_bits == 57 else 0]
    if not section_bits or not physmem_bits or sec_size <= 0:
        raise NotFoundError("SPARSEMEM geometry unknown (no NUMBER(SECTION_SIZE_BITS)/"
                            f"NUMBER(MAX_PHYSMEM_BITS) and no default for {arch.name})")
    pfn_shift = section_bits - page_shift
    per_section = 1 << pfn_shift
    nr_sections = 1 << (physmem_bits - section_bits)
    per_root_extreme = kmem.page_size // sec_size
    length = kmem.length("mem_section")
    extreme = length is None or length == -(-nr_sections // per_root_extreme)
    num = -(-max_mapnr // per_section)
    per_root = per_root_extreme if extreme else 1
    roots = -(-num // per_root)
    if roots * (ps if extreme else sec_size) > kmem.max_read:
        raise NotFoundError(f"{num} memory sections: the mem_section array would be too large")

    def decode(root_array: int) -> list[MemMap] | None:
        """``validate_mem_section``: None when a present section's mem_map is not a kernel address."""
        try:
            raw = kmem.read(root_array, roots * (ps if extreme else sec_size))
        except VmciError:
            return None
        out: list[MemMap] = []
        any_present = False
        for nr in range(num):
            if extreme:
                root = int.from_bytes(raw[(nr // per_root) * ps:(nr // per_root + 1) * ps], kmem.byteorder)
                if root == 0:
                    continue
                addr = root + (nr % per_root) * sec_size
            else:
                addr = root_array + nr * sec_size
            if not _is_kvaddr(addr, ps):
                continue
            try:
                word = kmem.read_pointer(addr + sec_off)
            except VmciError:
                continue
            if not word & SECTION_MARKED_PRESENT:
                continue
            coded = word & ~((1 << SECTION_MAP_FLAG_BITS) - 1)
            mem_map = (coded + (nr << pfn_shift) * page_size_of_struct) & ((1 << (8 * ps)) - 1)
            if not _is_kvaddr(mem_map, ps):
                return None
            any_present = True
            lo = nr * per_section
            out.append(MemMap(nr, lo, min(lo + per_section, max_mapnr), mem_map))
        return out if any_present else None

    model = "sparsemem-extreme" if extreme else "sparsemem"
    maps = decode(sym)
    how = "SYMBOL(mem_section) is the root array"
    if maps is None and extreme:
        # 4.15+ allocates the root array; a text that gives the pointer's address needs one more read
        try:
            maps = decode(kmem.read_pointer(sym))
            how = "SYMBOL(mem_section) points at the root array"
        except VmciError:
            maps = None
    if maps is None:
        raise NotFoundError(f"mem_section at {sym:#x} does not validate: no present section with a kernel "
                            "mem_map address")
    return MemoryModel(model, maps, how)


# -- classification --------------------------------------------------------------------------------

@dataclass
class PageScan:
    """The outcome of :func:`scan_pages`: excluded PFNs and how many of each class."""

    excluded: PfnBitmap
    counts: dict[str, int] = field(default_factory=dict)
    """Pages excluded by class name (``cache``, ``cache_private``, ``user``, ``free``, ...)."""
    scanned: int = 0
    """``struct page`` entries read and classified."""
    unreadable: int = 0
    """PFNs whose ``struct page`` could not be read (kept)."""
    model: MemoryModel | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"excluded": len(self.excluded), "counts": dict(self.counts), "scanned": self.scanned,
                "unreadable": self.unreadable, "model": self.model.model if self.model else None,
                "warnings": list(self.warnings)}


_CLASS_NAMES = {PageClass.CACHE: "cache", PageClass.CACHE_PRIVATE: "cache_private", PageClass.USER: "user",
                PageClass.FREE: "free", PageClass.HWPOISON: "hwpoison", PageClass.OFFLINE: "offline"}


def _field(np_: Any, buf: Any, n: int, stride: int, offset: int, width: int, order: str,
           signed: bool = False) -> np.ndarray:
    """Column ``offset`` of ``n`` records of ``stride`` bytes, as integers (zero-copy, unaligned ok)."""
    kind = "i" if signed else "u"
    dt = np_.dtype(f"{'<' if order == 'little' else '>'}{kind}{width}")
    return np_.ndarray((n,), dtype=dt, buffer=buf, offset=offset, strides=(stride,)).astype(
        np_.int64 if signed else np_.uint64)


def _test_bit(np_: Any, flags: np.ndarray, nr: int | None, absent: bool = False) -> np.ndarray:
    """makedumpfile's ``test_bit``: bit ``nr & 31`` of an ``int`` mask, which sign-extends bit 31
    (``absent`` for every page when the text lacks the number)."""
    if nr is None:
        return np_.full(len(flags), absent, dtype=bool)
    bit = nr & 0x1F
    mask = (1 << bit) if bit < 31 else 0xFFFFFFFF80000000
    return (flags & np_.uint64(mask)) != 0


def classify(buf: Any, pfn0: int, n: int, lay: PageLayout, level: int,
             in_dump: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classify ``n`` consecutive ``struct page`` records (``buf``) for PFNs ``pfn0``...

    Returns ``(index, pages, class)`` arrays of the entries that match a class: the index of the
    matching ``struct page`` in ``buf``, how many pages its match excludes (``1 << order``), and the
    :class:`PageClass` value.  Entries not in the dump (``in_dump`` False), compound tails and
    entries without a class are left out.  Whether a match is reached at all (an earlier block may
    cover it) is decided by the caller (:func:`scan_pages`), as makedumpfile's loop does.
    """
    import numpy as np

    size, order = lay.size, lay.byteorder
    ps = lay.pointer_size
    flags = _field(np, buf, n, size, lay.flags_at, ps, order)
    mapping = _field(np, buf, n, size, lay.mapping_at, ps, order)
    zero = np.zeros(n, dtype=np.int64)
    mapcount = zero if lay.mapcount_at is None else _field(np, buf, n, size, lay.mapcount_at, 4, order, True)
    private = _field(np, buf, n, size, lay.private_at, ps, order) if lay.private_at is not None \
        else zero.astype(np.uint64)
    pfns = np.arange(pfn0, pfn0 + n, dtype=np.int64)

    # compound heads: order (and hugetlb-ness) from the first tail page, inside the same
    # PGMM_CACHED block only
    head = np.zeros(n, dtype=bool)
    if lay.pg_head_mask:
        head = (flags & np.uint64(lay.pg_head_mask & ((1 << 64) - 1))) != 0
        head &= (pfns % PGMM_CACHED) != PGMM_CACHED - 1
        if n:
            head[n - 1] = False  # its first tail page is not in this block
    corder = np.zeros(n, dtype=np.int64)
    hugetlb = np.zeros(n, dtype=bool)
    if head.any():
        nxt = np.flatnonzero(head) + 1
        if lay.hugetlb_mapcount is not None or lay.pg_hugetlb is not None:
            tail_flags = flags[nxt]
            corder[nxt - 1] = (tail_flags & np.uint64(0xFF)).astype(np.int64)
            if lay.hugetlb_mapcount is not None:  # 6.9+: the head's page type
                hugetlb[nxt - 1] = mapcount[nxt - 1] == lay.hugetlb_mapcount
            else:  # 6.6-6.8: PG_hugetlb in folio._flags_1
                assert lay.pg_hugetlb is not None
                hugetlb[nxt - 1] = ((tail_flags >> np.uint64(lay.pg_hugetlb)) & np.uint64(1)) != 0
        else:
            raw = np.frombuffer(buf, dtype=np.uint8, count=n * size)
            if lay.order_at is not None:
                corder[nxt - 1] = _bytes_at(np, raw, nxt * size + lay.order_at, lay.order_width, order)
            if lay.dtor_at is not None and lay.hugetlb_dtor is not None:
                dtor = _bytes_at(np, raw, nxt * size + lay.dtor_at, lay.dtor_width, order)
                hugetlb[nxt - 1] = dtor == lay.hugetlb_dtor
        bad = (corder >= 64) | ((pfns & ((np.int64(1) << np.minimum(corder, 62)) - 1)) != 0)
        corder[bad] = 0
    tail = np.zeros(n, dtype=bool)
    if lay.compound_head_at is not None:
        tail = (_field(np, buf, n, size, lay.compound_head_at, ps, order) & np.uint64(1)) != 0

    slab = np.zeros(n, dtype=bool)
    if lay.pg_slab is not None:
        slab |= (flags >> np.uint64(lay.pg_slab & 63) & np.uint64(1)) != 0
    if lay.slab_mapcount is not None:
        slab |= mapcount == lay.slab_mapcount
    anon = ((mapping & np.uint64(1)) != 0) & ~slab
    private_flag = _test_bit(np, flags, lay.pg_private)
    swapcache = _test_bit(np, flags, lay.pg_swapcache)
    swapbacked = _test_bit(np, flags, lay.pg_swapbacked, absent=True)  # before 4.10: swapcache alone
    cache = _test_bit(np, flags, lay.pg_lru) | (swapbacked & swapcache)

    live = ~tail if in_dump is None else (~tail & in_dump)
    cls = np.zeros(n, dtype=np.int64)
    nr = np.int64(1) << np.minimum(corder, 62)
    todo = live.copy()

    def take(mask: Any, value: int) -> None:
        hit = todo & mask
        cls[hit] = value
        todo[hit] = False

    if level & DumpLevel.FREE and lay.finds_buddies:
        buddy = todo & ~slab & (mapcount == lay.buddy_mapcount)
        border = private.astype(np.int64)
        bad = buddy & ((border < 0) | (border >= (lay.max_order if lay.max_order is not None else 64)))
        todo[bad] = False  # an impossible order: makedumpfile warns and leaves the page alone
        ok = buddy & ~bad
        nr[ok] = np.int64(1) << np.minimum(border[ok], 62)
        cls[ok] = PageClass.FREE
        todo[ok] = False
        if lay.unaccepted_mapcount is not None and lay.max_order:
            un = todo & (mapcount == lay.unaccepted_mapcount)
            nr[un] = np.int64(1) << (lay.max_order - 1)
            take(un, PageClass.FREE)
    if level & DumpLevel.CACHE:
        take(cache & ~private_flag & ~anon, PageClass.CACHE)
    if level & DumpLevel.CACHE_PRIVATE:
        hit = todo & cache & ~anon
        cls[hit] = np.where(private_flag[hit], PageClass.CACHE_PRIVATE, PageClass.CACHE)
        todo[hit] = False
    if level & DumpLevel.USER:
        take(anon | hugetlb, PageClass.USER)
    if lay.pg_hwpoison is not None:
        take(_test_bit(np, flags, lay.pg_hwpoison), PageClass.HWPOISON)
    if lay.offline_mapcount is not None:
        take(~slab & (mapcount == lay.offline_mapcount), PageClass.OFFLINE)
    idx = np.flatnonzero(cls)
    return idx, nr[idx], cls[idx]


def _bytes_at(np_: Any, raw: np.ndarray, offsets: np.ndarray, width: int, order: str) -> np.ndarray:
    """Unsigned integers of ``width`` bytes at byte ``offsets`` of ``raw`` (0 past its end)."""
    out = np_.zeros(len(offsets), dtype=np_.int64)
    for i in range(width):
        pos = offsets + i
        ok = pos < len(raw)
        byte = np_.zeros(len(offsets), dtype=np_.int64)
        byte[ok] = raw[pos[ok]]
        shift = 8 * i if order == "little" else 8 * (width - 1 - i)
        out |= byte << shift
    return out


def _reached(np_: Any, starts: np.ndarray, ends: np.ndarray, covered: int) -> np.ndarray:
    """Which blocks makedumpfile's loop reaches: a block starting inside an earlier reached block
    (or below ``covered``) is skipped.  Blocks are aligned powers of two, so one pass nearly always
    settles it; the loop handles corrupt orders that overlap."""
    reached = np_.ones(len(starts), dtype=bool)
    for _ in range(64):
        prev = np_.where(reached, ends, 0)
        before = np_.maximum.accumulate(np_.concatenate(([covered], prev[:-1]))) if len(prev) else prev
        now = starts >= before
        if (now == reached).all():
            return now
        reached = now
    out = np_.zeros(len(starts), dtype=bool)  # pathological: decide one by one
    for i in range(len(starts)):
        if starts[i] >= covered:
            out[i] = True
            covered = max(covered, int(ends[i]))
    return out


def reached_blocks(buf: Any, pfn0: int, n: int, lay: PageLayout, level: int,
                   in_dump: np.ndarray | None = None, *,
                   covered: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(start, end, class)`` of the blocks of PFNs the ``struct page`` array ``buf`` (PFNs
    ``pfn0``..``pfn0 + n``) excludes at ``level``, as makedumpfile's loop reaches them: a match
    inside a block already excluded (or below ``covered``, a block of an earlier array of the same
    section) is not looked at.  Blocks may end past the array (a free block, a folio)."""
    import numpy as np

    covered = pfn0 if covered is None else covered
    idx, nr, cls = classify(buf, pfn0, n, lay, level, in_dump)
    starts = idx.astype(np.int64) + pfn0
    ends = starts + nr
    multi = nr > 1
    keep = starts >= covered
    if multi.any():
        keep[multi] &= _reached(np, starts[multi], ends[multi], covered)
        # a single page inside a reached block is not looked at either (it is excluded all the same)
        reached = keep & multi
        r_starts, r_ends = starts[reached], np.maximum.accumulate(ends[reached])
        single = np.flatnonzero(keep & ~multi)
        if len(r_starts) and len(single):
            pos = np.searchsorted(r_starts, starts[single], side="right") - 1
            inside = (pos >= 0) & (starts[single] < r_ends[np.maximum(pos, 0)])
            keep[single[inside]] = False
    return starts[keep], ends[keep], cls[keep]


Progress = Callable[[int, int], None]


def scan_pages(kmem: KernelMemory, ranges: Sequence[Range], level: int, *, max_mapnr: int | None = None,
               layout: PageLayout | None = None, chunk_pages: int = 1 << 15,
               progress: Progress | None = None) -> PageScan:
    """The PFNs makedumpfile would exclude at ``level`` from a dump holding ``ranges``.

    Reads every ``struct page`` of the PFNs the dump holds (in ``chunk_pages`` blocks, through the
    page tables), never the pages themselves.  Raises :class:`~vmci.errors.NotFoundError` when
    the VMCOREINFO does not describe ``struct page`` or the memory model.  A block of ``struct
    page`` that cannot be read keeps its pages (a warning counts them).
    """
    import numpy as np

    if not 0 <= level <= MAX_LEVEL:
        raise UsageError(f"dump level {level} is not between 0 and {MAX_LEVEL}")
    if kmem.vmcoreinfo is None:
        raise NotFoundError("page filtering needs a VMCOREINFO")
    ps = kmem.page_size
    end_pfn = max((-(-r.end // ps) for r in ranges), default=0)
    max_mapnr = end_pfn if max_mapnr is None else max_mapnr
    lay = layout or PageLayout.from_vmcoreinfo(kmem.vmcoreinfo, pointer_size=kmem.pointer_size,
                                               byteorder=kmem.byteorder)
    out = PageScan(PfnBitmap(max_mapnr))
    if level & DumpLevel.FREE and not lay.finds_buddies:
        out.warnings.append("free pages not excluded: the VMCOREINFO lacks OFFSET(page._mapcount), "
                            "OFFSET(page.private) or NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE) (makedumpfile would "
                            "walk the zones' free lists instead)")
    if not lay.scans(level):
        return out
    model = memory_model(kmem, max_mapnr)
    out.model = model
    out.warnings += model.warnings
    bits = np.frombuffer(out.excluded.bits, dtype=np.uint8)
    counts: dict[int, int] = {}
    spans = [(max(r.start, 0) // ps, r.end // ps) for r in ranges]  # whole pages the dump holds
    total = sum(min(m.pfn_end, max_mapnr) - m.pfn_start for m in model.maps)
    done = 0
    chunk_pages = max(PGMM_CACHED, chunk_pages // PGMM_CACHED * PGMM_CACHED)
    for mm in model.maps:
        covered = mm.pfn_start  # the loop restarts at each array (makedumpfile: one call per section)
        for lo in range(mm.pfn_start, min(mm.pfn_end, max_mapnr), chunk_pages):
            hi = min(lo + chunk_pages, mm.pfn_end, max_mapnr)
            mask = _in_dump(np, spans, lo, hi)
            if not mask.any():
                done += hi - lo
                continue
            try:
                buf = kmem.read(mm.mem_map + (lo - mm.pfn_start) * lay.size, (hi - lo) * lay.size)
            except MemoryReadError:
                buf = None
            if buf is None:
                got = _read_patchy(kmem, mm.mem_map + (lo - mm.pfn_start) * lay.size, hi - lo, lay.size)
                if got is None:
                    out.unreadable += int(mask.sum())
                    done += hi - lo
                    continue
                buf, readable = got
                out.unreadable += int((mask & ~readable).sum())
                mask &= readable
            out.scanned += int(mask.sum())
            starts, ends, cls = reached_blocks(buf, lo, hi - lo, lay, level, mask, covered=covered)
            kmem.release(mm.mem_map + (lo - mm.pfn_start) * lay.size, (hi - lo) * lay.size)
            if len(starts):
                covered = max(covered, int(ends.max()))
                _mark(np, bits, out.excluded, starts, np.minimum(ends, max_mapnr), lo, hi)
                for c in np.unique(cls):
                    sel = cls == c
                    counts[int(c)] = counts.get(int(c), 0) + int((np.minimum(ends[sel], max_mapnr)
                                                                  - starts[sel]).sum())
            done += hi - lo
            if progress is not None:
                progress(done, total)
    out.counts = {_CLASS_NAMES[PageClass(c)]: n for c, n in sorted(counts.items())}
    if out.unreadable:
        out.warnings.append(f"the struct page of {out.unreadable} PFNs could not be read: "
                            "those pages are kept")
    return out


def _in_dump(np_: Any, spans: list[tuple[int, int]], lo: int, hi: int) -> np.ndarray:
    mask = np_.zeros(hi - lo, dtype=bool)
    for a, b in spans:
        if b > lo and a < hi:
            mask[max(a, lo) - lo:min(b, hi) - lo] = True
    return mask


def _read_patchy(kmem: KernelMemory, va: int, n: int, size: int) -> tuple[bytes, np.ndarray] | None:
    """The records readable page by page (unmapped pages of the array read as zeros)."""
    import numpy as np

    out = bytearray(n * size)
    ok = np.zeros(n * size, dtype=bool)
    step = kmem.page_size
    pos = 0
    first = va
    while pos < n * size:
        take = min(step - (first + pos) % step, n * size - pos)
        try:
            out[pos:pos + take] = kmem.read(first + pos, take)
            ok[pos:pos + take] = True
        except MemoryReadError:
            pass
        pos += take
    if not ok.any():
        return None
    return bytes(out), np.asarray(ok.reshape(n, size).all(axis=1))


def _mark(np_: Any, bits: np.ndarray, bitmap: PfnBitmap, starts: np.ndarray, ends: np.ndarray,
          lo: int, hi: int) -> None:
    """Set ``[start, end)`` for every block: the part inside ``[lo, hi)`` as one packed OR, the
    rest (blocks running past the chunk) with :func:`~vmci.formats.kdump.bitmap.set_bits`."""
    if not len(starts):
        return
    n = hi - lo
    diff = np_.zeros(n + 1, dtype=np_.int64)
    np_.add.at(diff, starts - lo, 1)
    np_.add.at(diff, np_.minimum(ends, hi) - lo, -1)
    mask = np_.cumsum(diff[:-1]) > 0
    head = (-lo) % 8  # bits before the first whole byte
    if head:
        for i in np_.flatnonzero(mask[:head]):
            bitmap.add(lo + int(i))
    body = mask[head:]
    whole = len(body) // 8 * 8
    if whole:
        first = (lo + head) >> 3
        bits[first:first + whole // 8] |= np_.packbits(body[:whole], bitorder="little")
    for i in np_.flatnonzero(body[whole:]):
        bitmap.add(lo + head + whole + int(i))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if e > hi:
            set_bits(bitmap.bits, max(s, hi), min(e, bitmap.nbits))


__all__ = ["MAX_LEVEL", "PGMM_CACHED", "DumpLevel", "MemMap", "MemoryModel", "PageClass", "PageLayout",
           "PageScan", "classify", "memory_model", "reached_blocks", "scan_pages"]
