"""How much of a dump's described memory cannot be read, and why: excluded by the dump tool, or
lost to truncation.  Bounded work: bitmaps for kdump files, extent walks elsewhere.

retrace-server's operators found that about 30% of the vmcores that crash loads only with
``--minimal`` load with ``--zero_excluded`` (abrt/retrace-server PR #474, "try crash
--zero_excluded"): which pages are missing is worth a field of its own in a triage record.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmci.core.memory import PhysicalMemory
from vmci.formats.kdump.reader import KdumpMemory
from vmci.layouts import struct_format

__all__ = ["MemoryGaps", "memory_gaps"]

#: Extent lookups a generic walk may make before it gives up (a kdump file has its own path).
WALK_BUDGET = 1 << 16

#: Page descriptors a kdump file may have for its truncated pages to be counted (16 GiB of 4 KiB
#: pages: 96 MiB of descriptors, about two seconds).
DESC_BUDGET = 1 << 22

#: Extent ``missing`` reasons that mean the dump tool left the bytes out on purpose.
EXCLUDED_REASONS = ("excluded", "not in the file", "not in the stream")


@dataclass(frozen=True)
class MemoryGaps:
    """Bytes described by the dump, bytes unreadable, of those excluded on purpose, and whether
    the file ends before data it announces."""

    described: int
    missing: int
    excluded: int
    truncated: bool


def memory_gaps(memory: PhysicalMemory, *, budget: int = WALK_BUDGET) -> MemoryGaps | None:
    """The gaps in ``memory``; ``None`` when finding them would take more than ``budget`` extent
    lookups (a dump of many small pieces)."""
    if isinstance(memory, KdumpMemory):
        return _kdump_gaps(memory)
    missing = excluded = 0
    truncated = False
    calls = 0
    for r in memory.ranges:
        pos = r.start
        while pos < r.end:
            calls += 1
            if calls > budget:
                return None
            ext = memory.extent(pos, r.end - pos)
            if ext.data is None:
                missing += ext.size
                reason = ext.missing or ""
                if reason.startswith(EXCLUDED_REASONS) or "excluded" in reason:
                    excluded += ext.size
                truncated |= reason == "truncated"
            pos += ext.size
    return MemoryGaps(memory.size, missing, excluded, truncated)


def _kdump_gaps(memory: KdumpMemory) -> MemoryGaps | None:
    """Excluded pages from the two bitmaps (RAM, but not dumped); truncated pages from the page
    descriptors: those the file has no room for, and those whose data lies past its end (read
    without decompressing anything).  ``None`` past :data:`DESC_BUDGET` descriptors."""
    info = memory.info
    ps = memory.page_size
    lo, hi = info.start_pfn, min(info.end_pfn, info.max_mapnr)
    mask = ((1 << hi) - 1) ^ ((1 << lo) - 1) if hi > lo else 0
    b1 = int.from_bytes(memory.bitmap1, "little") & mask
    b2 = int.from_bytes(memory.bitmap2, "little") & mask
    excluded_pages = (b1 & ~b2).bit_count()
    total = b2.bit_count()
    n = min(memory.n_desc, total)
    if n > DESC_BUDGET:
        return None
    desc = struct_format(info.layout.page_desc)
    end = memory.src.size
    past = 0
    step = desc.size * 4096
    for pos in range(0, n * desc.size, step):
        buf = memory.src.read(info.desc_offset + pos, min(step, n * desc.size - pos))
        past += sum(1 for off, size, *_ in desc.iter_unpack(buf) if off + size > end)
    truncated_pages = total - n + past
    return MemoryGaps(memory.size, (excluded_pages + truncated_pages) * ps, excluded_pages * ps,
                      truncated_pages > 0)
