"""Guest-physical memory: the seam every dump format meets.

A :class:`PhysicalMemory` describes a set of physical address ranges (the RAM the dump
covers) and reads bytes from them.  Above this module nothing knows which container a byte
came from: ACPI walks, blob walks, scans and page-table walks all take a ``PhysicalMemory``.

Holes and excluded pages are errors by default (:class:`~vmci.errors.HoleError`,
:class:`~vmci.errors.ExcludedPageError`); pass ``zero_fill=True`` to read them as zeros,
which is what crash does with ``--zero_excluded`` and libkdumpfile with ``file.zero_excluded``.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from vmci.errors import ExcludedPageError, HoleError, UsageError

PAGE_SIZE = 4096
ZERO_PAGE = bytes(PAGE_SIZE)
ZEROS = memoryview(bytes(1 << 20))
#: :meth:`PhysicalMemory.page_blocks` releases what it read again every this many bytes
SWEEP = 64 << 20

Buffer = bytes | bytearray | memoryview


def is_zero(buf: Buffer) -> bool:
    """True if every byte of ``buf`` is zero."""
    b = buf if isinstance(buf, bytes) else bytes(buf)
    return b.count(0) == len(b)


def zero_page_flags(block: Buffer, page_size: int) -> list[bool]:
    """For each whole page of ``block``: is it all zeros?  (numpy compares whole blocks at memory
    speed; a page of a size not a multiple of 8 is compared as bytes.)"""
    n = len(block) // page_size
    if page_size % 8:
        return [bytes(block[i * page_size:(i + 1) * page_size]).count(0) == page_size for i in range(n)]
    import numpy as np

    words = np.frombuffer(block, dtype=np.uint64, count=n * page_size // 8).reshape(n, page_size // 8)
    zero = np.logical_not(words.any(axis=1))
    return [bool(z) for z in np.atleast_1d(zero)]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True, order=True)
class Range:
    """A half-open physical address range ``[start, start + size)``."""

    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size

    def __contains__(self, paddr: object) -> bool:
        return isinstance(paddr, int) and self.start <= paddr < self.end

    def __str__(self) -> str:
        return f"{self.start:#x}-{self.end:#x}"


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sort and merge overlapping or touching ranges."""
    out: list[Range] = []
    for r in sorted(r for r in ranges if r.size > 0):
        if out and r.start <= out[-1].end:
            last = out[-1]
            out[-1] = Range(last.start, max(last.end, r.end) - last.start)
        else:
            out.append(r)
    return out


def find_span(starts: Sequence[int], ends: Sequence[int], paddr: int, limit: int) -> int | Extent:
    """The index of the span holding ``paddr`` (spans sorted and disjoint), else the hole from
    ``paddr`` up to the next span, at most ``limit`` bytes: what every ``extent()`` looks up first."""
    i = bisect.bisect_right(starts, paddr) - 1
    if i >= 0 and paddr < ends[i]:
        return i
    nxt = starts[i + 1] if i + 1 < len(starts) else paddr + limit
    return Extent(None, min(limit, nxt - paddr), "hole")


class Extent(NamedTuple):
    """What lies at an address: ``size`` bytes of ``data``, or (``data is None``) ``size``
    unreadable bytes, with ``missing`` saying why (``"hole"``, ``"excluded"``, ...)."""

    data: Buffer | None
    size: int
    missing: str | None = None


class Run(NamedTuple):
    """A stretch of described memory of one kind: ``size`` bytes from ``start``, readable
    (``missing is None``) or not (``missing`` says why, as in :class:`Extent`).  ``zero`` marks
    readable bytes the container knows are all zero without reading them: a kdump page that
    shares the stored zero page, a hole in the dump file, a migration ZERO record, a page of
    guest RAM never written."""

    start: int
    size: int
    missing: str | None = None
    zero: bool = False

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def data(self) -> bool:
        """Readable and possibly non-zero: what a search for bytes must look at."""
        return self.missing is None and not self.zero


def coalesce(runs: Iterable[Run]) -> Iterator[Run]:
    """``runs`` (in address order) with each stretch of touching runs of one kind (the same
    ``missing`` and ``zero``) joined into one: what :meth:`PhysicalMemory.runs` yields."""
    cur: Run | None = None
    for r in runs:
        if cur is not None and cur.end == r.start and (cur.missing, cur.zero) == (r.missing, r.zero):
            cur = cur._replace(size=cur.size + r.size)
            continue
        if cur is not None:
            yield cur
        cur = r
    if cur is not None:
        yield cur


class PhysicalMemory(ABC):
    """Read access to the guest-physical memory held by a dump.

    **Work bounded by the file.**  A header may claim any amount of memory (a corrupt
    ``p_memsz``, ``max_mapnr`` or RAMBlock length says petabytes); what a reader can do with
    it is bounded by the bytes the file holds.  Every walk here goes by :meth:`runs`: a stretch
    that is unreadable (hole, excluded, described only) or known to be zero costs O(1) however
    long it is, so the work of :meth:`chunks`, :meth:`data_chunks` and :meth:`pages` grows with
    the bytes the dump stores, never with the memory it describes.  Implementations keep to
    the same rule: no loop, allocation or search sized by a header value without a clamp by the
    bytes that back it.
    """

    page_size: int = PAGE_SIZE

    @property
    @abstractmethod
    def ranges(self) -> Sequence[Range]:
        """The physical ranges the dump describes, sorted and non-overlapping."""

    @abstractmethod
    def extent(self, paddr: int, limit: int) -> Extent:
        """Describe memory at ``paddr``: at least 1 and at most ``limit`` bytes.

        An unreadable extent should reach as far as the unreadable stretch does (up to
        ``limit``) in O(1): walks skip it in one step, whatever size a header claims for it.
        A readable extent may be shorter (a page, a file mapping).
        """

    # -- derived operations -------------------------------------------------------------

    @property
    def size(self) -> int:
        """Total number of bytes described by :attr:`ranges`."""
        return sum(r.size for r in self.ranges)

    def contains(self, paddr: int, n: int = 1) -> bool:
        """True if ``[paddr, paddr+n)`` lies inside one described range."""
        rs = self.ranges
        i = bisect.bisect_right(rs, Range(paddr, 1 << 70)) - 1
        return i >= 0 and rs[i].start <= paddr and paddr + n <= rs[i].end

    def read(self, paddr: int, n: int, *, zero_fill: bool = False) -> bytes:
        """Read ``n`` bytes at ``paddr``.

        Raises :class:`HoleError` or :class:`ExcludedPageError` for unreadable bytes unless
        ``zero_fill`` is true, in which case they read as zeros.  The caller bounds ``n``.
        """
        if n < 0 or paddr < 0:
            raise UsageError(f"invalid read of {n} bytes at {paddr:#x}")
        parts: list[Buffer] = []
        pos, left = paddr, n
        while left > 0:
            ext = self.extent(pos, left)
            if ext.data is None:
                if not zero_fill:
                    cls = ExcludedPageError if ext.missing != "hole" else HoleError
                    what = ext.missing or "unreadable"
                    raise cls(f"physical address {pos:#x} is not in the dump ({what})", paddr=pos)
                parts.append(bytes(ext.size))
            else:
                parts.append(ext.data)
            pos += ext.size
            left -= ext.size
        return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)

    def readable(self, paddr: int, n: int) -> bool:
        """True if every byte of ``[paddr, paddr+n)`` can be read without zero-filling."""
        pos, left = paddr, n
        while left > 0:
            ext = self.extent(pos, left)
            if ext.data is None:
                return False
            pos += ext.size
            left -= ext.size
        return True

    def runs(self, start: int = 0, end: int | None = None) -> Iterator[Run]:
        """The described memory in ``[start, end)`` as maximal stretches of one kind, in
        address order (holes between :attr:`ranges` are left out).

        O(1) per run: containers override this from their own index (bitmaps and page
        descriptors, program headers, a page index, the file's holes); this default asks
        :meth:`extent` for everything up to the end of each range, so an unreadable stretch
        costs one call, and it cannot tell zero bytes from data.
        """
        for r in self.ranges:
            stop = r.end if end is None else min(r.end, end)
            yield from coalesce(self._extent_runs(max(r.start, start), stop))

    def _extent_runs(self, pos: int, stop: int) -> Iterator[Run]:
        while pos < stop:
            ext = self.extent(pos, stop - pos)
            size = min(max(ext.size, 1), stop - pos)
            yield Run(pos, size, None if ext.data is not None else (ext.missing or "unreadable"))
            pos += size

    def _run_buffers(self, run: Run, max_size: int) -> Iterator[tuple[int, Buffer]]:
        """The bytes of one readable run, in buffers of at most ``max_size`` bytes."""
        pos, stop = run.start, run.end
        if run.zero:
            step = min(max_size, len(ZEROS))
            while pos < stop:
                take = min(step, stop - pos)
                yield pos, ZEROS[:take]
                pos += take
            return
        while pos < stop:
            ext = self.extent(pos, min(stop - pos, max_size))
            if ext.data is not None:
                yield pos, ext.data
            pos += max(ext.size, 1)

    def chunks(
        self, start: int = 0, end: int | None = None, max_size: int = 1 << 20
    ) -> Iterator[tuple[int, Buffer]]:
        """Yield ``(paddr, buffer)`` for the readable memory in ``[start, end)``.

        Buffers are at most ``max_size`` bytes and may be views into the dump file, valid
        until the dump is closed.  Unreadable stretches are skipped, each in O(1) through
        :meth:`runs`: the work is bounded by the readable bytes in ``[start, end)``, never by
        what a header claims.  Zero stretches the container knows of are yielded (as views of
        one shared zero buffer); :meth:`data_chunks` leaves them out.
        """
        for run in self.runs(start, end):
            if run.missing is None:
                yield from self._run_buffers(run, max_size)

    def data_chunks(
        self, start: int = 0, end: int | None = None, max_size: int = 1 << 20
    ) -> Iterator[tuple[int, Buffer]]:
        """Like :meth:`chunks`, but leaves out the stretches the container knows are all zero
        (pages never written, a kdump's shared zero page, file holes): what a search for bytes
        needs.  The work is bounded by the bytes the dump stores."""
        for run in self.runs(start, end):
            if run.data:
                yield from self._run_buffers(run, max_size)

    def pages(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Buffer]]:
        """Yield ``(paddr, page)`` for every fully readable page in ``[start, end)``."""
        ps = self.page_size
        done = -1  # address of the last page yielded
        for addr, buf in self.chunks(start, end):
            mv = memoryview(buf)
            stop = addr + len(mv)
            first = -(-addr // ps) * ps
            head = first - ps
            # a page straddling the previous chunk and this one
            if addr % ps and head > done and head >= start and self.readable(head, ps):
                yield head, self.read(head, ps)
                done = head
            p = first
            while p + ps <= stop:
                yield p, mv[p - addr : p - addr + ps]
                done = p
                p += ps
            if p < stop and (end is None or p + ps <= end) and self.readable(p, ps):
                yield p, self.read(p, ps)
                done = p

    def page_runs(self) -> Iterator[tuple[int, int]]:
        """PFN runs ``[lo, hi)`` whose pages are wholly readable, ascending.  The default walks
        :meth:`chunks` (touching no data for file-backed views); containers that would have to
        decompress to do that answer from their own maps."""
        ps = self.page_size
        run_lo = run_hi = -1
        for addr, buf in self.chunks():
            if addr != run_hi:
                if run_hi > run_lo and run_hi // ps > -(-run_lo // ps):
                    yield -(-run_lo // ps), run_hi // ps
                run_lo = addr
            run_hi = addr + len(buf)
        if run_hi > run_lo and run_hi // ps > -(-run_lo // ps):
            yield -(-run_lo // ps), run_hi // ps

    def page_blocks(self, start: int = 0, end: int | None = None,
                    max_size: int = 1 << 20) -> Iterator[tuple[int, Buffer]]:
        """Yield ``(paddr, buffer)`` of whole readable pages in ``[start, end)``, ascending, each
        buffer page-aligned and a multiple of :attr:`page_size` long (at most ``max_size`` rounded
        down to pages): what a writer that handles pages in bulk needs.  A page split between two
        extents is read whole; a page not wholly readable is skipped."""
        ps = self.page_size
        done = start  # everything below was yielded or skipped
        swept = start  # released again up to here (pages mapped back in by a neighbour's fault)
        for addr, buf in self.chunks(start, end, max(ps, max_size)):
            if done - swept >= SWEEP:
                self.release(swept, done - swept)
                swept = done
            stop = addr + len(buf)
            first = -(-addr // ps) * ps
            last = stop // ps * ps
            head = first - ps
            if addr % ps and head >= done and (end is None or head + ps <= end) and self.readable(head, ps):
                yield head, self.read(head, ps)
                done = head + ps
            if last > first:
                mv = memoryview(buf)
                yield first, mv[first - addr:last - addr]
                done = last
            if last < stop and last >= done and (end is None or last + ps <= end) and self.readable(last, ps):
                yield last, self.read(last, ps)
                done = last + ps
        if done > swept:
            self.release(swept, done - swept)

    def release(self, paddr: int, n: int) -> None:  # noqa: B027 - optional hook
        """Hint that ``[paddr, paddr + n)`` will not be read again soon: a file-backed container
        drops those pages from the process (peak RSS stays flat on big dumps)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file resources (views handed out before become invalid)."""


class SparseMemory(PhysicalMemory):
    """Writable, page-granular, in-process memory: the producer's guest RAM.

    Pages inside :attr:`ranges` that were never written read as zeros and are not stored,
    so a 16 GiB guest costs only the pages it touches.
    """

    def __init__(self, ranges: Iterable[Range] = (), page_size: int = PAGE_SIZE) -> None:
        self.page_size = page_size
        self._set_ranges(merge_ranges(ranges))
        self._pages: dict[int, bytearray] = {}
        self._zero = bytes(page_size)

    @property
    def ranges(self) -> Sequence[Range]:
        return self._ranges

    def add_range(self, start: int, size: int) -> None:
        self._set_ranges(merge_ranges([*self._ranges, Range(start, size)]))

    def _set_ranges(self, ranges: list[Range]) -> None:
        self._ranges = ranges
        self._starts = [r.start for r in ranges]
        self._ends = [r.end for r in ranges]

    def page_runs(self) -> Iterator[tuple[int, int]]:
        ps = self.page_size
        for r in self._ranges:
            if r.end // ps > -(-r.start // ps):
                yield -(-r.start // ps), r.end // ps

    def stored_pages(self) -> Iterator[int]:
        """Page frame numbers that hold written data, in ascending order."""
        return iter(sorted(self._pages))

    def data_chunks(
        self, start: int = 0, end: int | None = None, max_size: int = 1 << 20
    ) -> Iterator[tuple[int, Buffer]]:
        # only runs of stored pages: a page never written reads as zeros
        ps = self.page_size
        run: list[int] = []
        lo_pfn = start // ps
        hi_pfn = None if end is None else -(-end // ps)
        for pfn in [*self.stored_pages(), -1]:
            if run and (pfn != run[-1] + 1 or len(run) * ps >= max_size):
                lo = max(run[0] * ps, start)
                hi = (run[-1] + 1) * ps if end is None else min((run[-1] + 1) * ps, end)
                if hi > lo and self.readable(lo, hi - lo):
                    yield lo, self.read(lo, hi - lo)
                run = []
            if pfn >= lo_pfn and (hi_pfn is None or pfn < hi_pfn):
                run.append(pfn)

    def write(self, paddr: int, data: Buffer) -> None:
        """Write ``data`` at ``paddr``; the whole span must lie inside :attr:`ranges`."""
        if not self.contains(paddr, max(len(data), 1)):
            raise HoleError(f"write of {len(data)} bytes at {paddr:#x} is outside guest RAM", paddr=paddr)
        ps = self.page_size
        mv = memoryview(data)
        pos = 0
        while pos < len(mv):
            pfn, off = divmod(paddr + pos, ps)
            take = min(ps - off, len(mv) - pos)
            page = self._pages.get(pfn)
            if page is None:
                page = self._pages[pfn] = bytearray(ps)
            page[off : off + take] = mv[pos : pos + take]
            pos += take

    def extent(self, paddr: int, limit: int) -> Extent:
        i = find_span(self._starts, self._ends, paddr, limit)
        if isinstance(i, Extent):
            return i
        limit = min(limit, self._ends[i] - paddr)
        ps = self.page_size
        pfn, off = divmod(paddr, ps)
        take = min(ps - off, limit)
        page = self._pages.get(pfn)
        if page is not None:
            return Extent(memoryview(page)[off : off + take], take)
        # a run of never-written pages is one extent of zeros (scans skip through it fast)
        limit = min(limit, len(ZEROS))
        while take < limit and (pfn + 1 + (off + take - ps) // ps) not in self._pages:
            take = min(take + ps, limit)
        return Extent(ZEROS[:take], take)

    def pages(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Buffer]]:
        ps = self.page_size
        for r in self._ranges:
            lo = max(r.start, start)
            hi = r.end if end is None else min(r.end, end)
            first = -(-lo // ps)
            for pfn in range(first, hi // ps):
                page = self._pages.get(pfn)
                yield pfn * ps, self._zero if page is None else page


class RestrictedMemory(PhysicalMemory):
    """``memory`` seen only inside ``ranges`` (e.g. the System RAM a kdump kernel exports)."""

    def __init__(self, memory: PhysicalMemory, ranges: Iterable[Range]) -> None:
        self.memory = memory
        self.page_size = memory.page_size
        self._ranges = merge_ranges(ranges)
        self._starts = [r.start for r in self._ranges]
        self._ends = [r.end for r in self._ranges]

    @property
    def ranges(self) -> Sequence[Range]:
        return self._ranges

    def extent(self, paddr: int, limit: int) -> Extent:
        i = find_span(self._starts, self._ends, paddr, limit)
        if isinstance(i, Extent):
            return i
        return self.memory.extent(paddr, min(limit, self._ranges[i].end - paddr))


def subtract(ranges: Iterable[Range], holes: Iterable[Range]) -> list[Range]:
    """``ranges`` minus ``holes``."""
    out = list(merge_ranges(ranges))
    for h in holes:
        nxt: list[Range] = []
        for r in out:
            if h.end <= r.start or h.start >= r.end:
                nxt.append(r)
                continue
            if r.start < h.start:
                nxt.append(Range(r.start, h.start - r.start))
            if h.end < r.end:
                nxt.append(Range(h.end, r.end - h.end))
        out = nxt
    return out
