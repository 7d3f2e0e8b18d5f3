"""Page filters: which pages a converted dump leaves out, by makedumpfile's dump levels.

Each :class:`PageFilter` is one bit of the dump level (makedumpfile's ``-d``), registered in
:data:`FILTERS`.  The ``struct page`` filters are decided in one scan of the kernel's ``mem_map``
(:func:`vmci.kernel.mm.scan_pages`) into a PFN bitmap before any page is copied; the zero-page
filter by content, while pages are copied (:func:`vmci.core.memory.zero_page_flags`).  A writer
thus reads each page once.

Where the excluded pages go: a kdump file leaves them out of its 2nd bitmap; zero pages keep
their bit and share one stored zero page, as makedumpfile writes them at ``-d 1``
(``write_kdump_pages_cyclic``); an ELF file cuts its PT_LOADs around them, and leaves zero
pages as file holes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmci.core.memory import PhysicalMemory, zero_page_flags
from vmci.errors import NotFoundError, UsageError
from vmci.formats.kdump.bitmap import PfnBitmap, set_bits
from vmci.kernel.mm import MAX_LEVEL, DumpLevel, PageScan, scan_pages

if TYPE_CHECKING:

    from vmci.kernel.vmem import KernelMemory

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PageFilter:
    """One dump-level bit: its name, what decides it, and what it drops."""

    name: str
    bit: int
    by: str
    """``content`` (the page's bytes) or ``struct page`` (the kernel's ``mem_map``)."""
    description: str


#: Every filter, by dump-level bit (makedumpfile's ``DL_EXCLUDE_*``).
FILTERS: tuple[PageFilter, ...] = (
    PageFilter("zero", DumpLevel.ZERO, "content", "pages filled with zeros"),
    PageFilter("cache", DumpLevel.CACHE, "struct page", "page cache without private data"),
    PageFilter("cache_private", DumpLevel.CACHE_PRIVATE, "struct page", "page cache, private data or not"),
    PageFilter("user", DumpLevel.USER, "struct page", "user-process pages (anonymous, hugetlbfs)"),
    PageFilter("free", DumpLevel.FREE, "struct page", "free pages (buddy allocator)"),
)
REGISTRY = {f.name: f for f in FILTERS}


def check_level(level: int) -> int:
    if not 0 <= level <= MAX_LEVEL:
        raise UsageError(f"dump level {level} is not between 0 and {MAX_LEVEL}")
    return level


def filters_for(level: int) -> list[PageFilter]:
    """The filters a dump level turns on."""
    check_level(level)
    return [f for f in FILTERS if level & f.bit]


def level_of(names: Iterable[str]) -> int:
    """The dump level of filter names (``["zero", "free"]`` is 17)."""
    level = 0
    for name in names:
        if name not in REGISTRY:
            raise UsageError(f"unknown page filter {name!r}; choose from {', '.join(REGISTRY)}")
        level |= REGISTRY[name].bit
    return level


def describe(level: int) -> str:
    """``"31 (zero, cache, cache_private, user, free)"``."""
    names = [f.name for f in filters_for(level)]
    return f"{level} ({', '.join(names)})" if names else f"{level} (nothing excluded)"


@dataclass
class Exclusion:
    """The pages a conversion leaves out before copying: the ``struct page`` classes of the dump
    level (plus hardware-poisoned and offline pages, which makedumpfile always drops when it reads
    ``struct page``) and the pages the source itself lacks."""

    level: int
    bitmap: PfnBitmap
    counts: dict[str, int] = field(default_factory=dict)
    scan: PageScan | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "excluded": len(self.bitmap), "counts": dict(self.counts),
                "warnings": list(self.warnings)}


def struct_page_exclusion(kmem: KernelMemory | None, memory: PhysicalMemory, level: int, *,
                          nbits: int | None = None, progress: Progress | None = None) -> Exclusion:
    """The PFNs the ``struct page`` filters of ``level`` drop, and the pages ``memory`` lacks
    (excluded or unreadable in the source), as one bitmap of ``nbits`` PFNs.

    Raises :class:`~vmci.errors.NotFoundError` when ``level`` asks for a ``struct page`` class and
    the kernel's ``mem_map`` cannot be read (no VMCOREINFO, or one that does not describe it).
    """
    check_level(level)
    ps = memory.page_size
    ranges = list(memory.ranges)
    nbits = nbits if nbits is not None else max((-(-r.end // ps) for r in ranges), default=0)
    needs = level & ~DumpLevel.ZERO
    out = Exclusion(level, PfnBitmap(nbits))
    if kmem is None:
        if needs:
            raise NotFoundError(f"dump level {level} needs the kernel's struct page: no usable VMCOREINFO")
        out.warnings.append("hardware-poisoned and offline pages not looked for (no usable VMCOREINFO)")
    else:
        try:
            scan = scan_pages(kmem, ranges, level, max_mapnr=nbits, progress=progress)
        except NotFoundError as e:
            if needs:
                raise NotFoundError(f"dump level {level}: {e}") from None
            out.warnings.append(f"hardware-poisoned and offline pages not looked for: {e}")
        else:
            out.scan = scan
            out.bitmap = scan.excluded
            out.counts = dict(scan.counts)
            out.warnings += scan.warnings
    _exclude_unreadable(memory, out.bitmap, ranges)
    return out


def _exclude_unreadable(memory: PhysicalMemory, bitmap: PfnBitmap, ranges: list[Any]) -> None:
    """Mark the PFNs inside ``ranges`` that ``memory`` cannot give whole (a kdump source's
    excluded pages): a converted dump says they are excluded instead of inventing zeros."""
    ps = memory.page_size
    runs = list(memory.page_runs())
    j = 0
    for r in ranges:
        lo, hi = r.start // ps, min(-(-r.end // ps), bitmap.nbits)
        while j < len(runs) and runs[j][1] <= lo:
            j += 1
        cur, k = lo, j
        while k < len(runs) and runs[k][0] < hi:
            a, b = runs[k]
            if a > cur:
                set_bits(bitmap.bits, cur, a)
            cur = max(cur, b)
            k += 1
        if cur < hi:
            set_bits(bitmap.bits, cur, hi)


def zero_pages(memory: PhysicalMemory, *, nbits: int | None = None, exclude: PfnBitmap | None = None,
               progress: Progress | None = None) -> PfnBitmap:
    """The PFNs whose page is all zeros (reads every page not in ``exclude``): the level-1 class
    on its own, for reports and comparisons; a conversion decides it while copying."""
    import numpy as np

    ps = memory.page_size
    nbits = nbits if nbits is not None else max((-(-r.end // ps) for r in memory.ranges), default=0)
    out = PfnBitmap(nbits)
    bits = out.bits
    total = sum(b - a for a, b in memory.page_runs())
    done = 0
    for addr, block in memory.page_blocks():
        pfn = addr // ps
        mask = zero_page_flags(block, ps)
        for i in np.flatnonzero(mask).tolist():
            p = pfn + i
            if p < nbits and (exclude is None or p not in exclude):
                bits[p >> 3] |= 1 << (p & 7)
        done += len(mask)
        if progress is not None:
            progress(done, total)
    return out


__all__ = ["FILTERS", "REGISTRY", "Exclusion", "PageFilter", "check_level", "describe", "filters_for",
           "level_of", "struct_page_exclusion", "zero_pages"]
