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

Buffer = bytes | bytearray | memoryview


def is_zero(buf: Buffer) -> bool:
    """True if every byte of ``buf`` is zero."""
    b = buf if isinstance(buf, bytes) else bytes(buf)
    return b.count(0) == len(b)


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


class PhysicalMemory(ABC):
    """Read access to the guest-physical memory held by a dump."""

    page_size: int = PAGE_SIZE

    @property
    @abstractmethod
    def ranges(self) -> Sequence[Range]:
        """The physical ranges the dump describes, sorted and non-overlapping."""

    @abstractmethod
    def extent(self, paddr: int, limit: int) -> Extent:
        """Describe memory at ``paddr``: at least 1 and at most ``limit`` bytes."""

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
        ``zero_fill`` is true, in which case they read as zeros.
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

    def chunks(
        self, start: int = 0, end: int | None = None, max_size: int = 1 << 20
    ) -> Iterator[tuple[int, Buffer]]:
        """Yield ``(paddr, buffer)`` for the readable memory in ``[start, end)``.

        Buffers are at most ``max_size`` bytes and may be views into the dump file, valid
        until the dump is closed.  Unreadable stretches are skipped.  Use this for scans.
        """
        for r in self.ranges:
            pos = max(r.start, start)
            stop = r.end if end is None else min(r.end, end)
            while pos < stop:
                ext = self.extent(pos, min(stop - pos, max_size))
                if ext.data is not None:
                    yield pos, ext.data
                elif ext.size == max_size < stop - pos:
                    # a long unreadable stretch (a corrupt size can describe petabytes): skip it in
                    # one step; describing it reads nothing
                    ext = self.extent(pos, stop - pos)
                pos += ext.size

    def data_chunks(self, max_size: int = 1 << 20) -> Iterator[tuple[int, Buffer]]:
        """Like :meth:`chunks`, but may leave out stretches the container knows are all zero
        (pages never written, a kdump's shared zero page): what a search for bytes needs."""
        return self.chunks(max_size=max_size)

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

    def stored_pages(self) -> Iterator[int]:
        """Page frame numbers that hold written data, in ascending order."""
        return iter(sorted(self._pages))

    def data_chunks(self, max_size: int = 1 << 20) -> Iterator[tuple[int, Buffer]]:
        # only runs of stored pages: a page never written reads as zeros
        ps = self.page_size
        run: list[int] = []
        for pfn in [*self.stored_pages(), -1]:
            if run and (pfn != run[-1] + 1 or len(run) * ps >= max_size):
                start = run[0] * ps
                if self.readable(start, len(run) * ps):
                    yield start, self.read(start, len(run) * ps)
                run = []
            if pfn >= 0:
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
