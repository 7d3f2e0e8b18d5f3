"""Pages classified with numpy, a block of ``struct page`` entries at a time, by the rules and in
the order of makedumpfile's ``__exclude_unnecessary_pages``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


from vmci.kernel.mm.layout import PGMM_CACHED, DumpLevel, PageClass, PageLayout

CLASS_NAMES = {PageClass.CACHE: "cache", PageClass.CACHE_PRIVATE: "cache_private", PageClass.USER: "user",
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
