""":func:`scan_pages`: every ``struct page`` read through the kernel's page tables and
classified into a PFN bitmap of excluded pages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmci.core.memory import Range
from vmci.errors import MemoryReadError, NotFoundError, UsageError
from vmci.formats.kdump.bitmap import PfnBitmap, set_bits

if TYPE_CHECKING:
    import numpy as np

    from vmci.kernel.vmem import KernelMemory

from vmci.kernel.mm.classify import CLASS_NAMES, reached_blocks
from vmci.kernel.mm.layout import MAX_LEVEL, PGMM_CACHED, DumpLevel, PageClass, PageLayout
from vmci.kernel.mm.model import MemoryModel, memory_model

Progress = Callable[[int, int], None]


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
    out.counts = {CLASS_NAMES[PageClass(c)]: n for c, n in sorted(counts.items())}
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
