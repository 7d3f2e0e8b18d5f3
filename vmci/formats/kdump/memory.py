"""The physical memory of a kdump-compressed file: pages found through the bitmaps and the
page-descriptor table, decompressed on demand (a small LRU cache), never loaded whole.

Works on any :class:`~vmci.formats.source.Source`, so a flattened file is read in place
through its record index.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

from vmci.core.codecs import CodecError, decompress_page
from vmci.core.memory import Buffer, Extent, PhysicalMemory, Range
from vmci.errors import UnsupportedError
from vmci.formats.kdump.bitmap import RankIndex, bit_runs, read_bitmaps
from vmci.formats.kdump.header import KdumpInfo
from vmci.formats.source import Source
from vmci.layouts import struct_format
from vmci.layouts.kdump import CODEC_BITS, COMPRESSION_FLAGS

_CODEC_BY_BIT = {int(bit): name for name, bit in COMPRESSION_FLAGS.items()}


class KdumpMemory(PhysicalMemory):
    """Physical memory of one kdump-compressed file (or one file of a split set)."""

    def __init__(self, src: Source, info: KdumpInfo, cache_pages: int = 64) -> None:
        self.src = src
        self.info = info
        self.page_size = info.block_size
        self.warnings = info.warnings
        self.bitmap1, self.bitmap2 = read_bitmaps(src, info)
        self._desc = struct_format(info.layout.page_desc)
        self._ranges = [
            Range(a * self.page_size, (b - a) * self.page_size)
            for a, b in bit_runs(self.bitmap1, info.max_mapnr)
        ]
        self._rank = RankIndex(self.bitmap2, info.max_mapnr)
        self._first_idx = self.rank(info.start_pfn)
        total = self.rank(info.end_pfn) - self._first_idx
        room = max(0, (src.size - info.desc_offset) // self._desc.size)
        if room < total:
            self.warnings.append(
                f"the file holds {room} of {total} page descriptors: the dump is truncated, "
                "later pages are unreadable"
            )
        self.n_desc = min(total, room)
        self._cache: OrderedDict[int, Buffer] = OrderedDict()
        self._cache_pages = cache_pages
        self._bad: dict[int, str] = {}
        self._truncated = False
        if self.n_desc:  # writers store pages in PFN order: the last one ends the file
            last = self._read_desc(self.n_desc - 1)
            if last[0] + last[1] > src.size:
                self._load(-1, last)

    def rank(self, pfn: int) -> int:
        """Number of dumped pages below ``pfn``."""
        return self._rank.rank(pfn)

    @property
    def ranges(self) -> Sequence[Range]:
        return self._ranges

    def _state(self, pfn: int) -> str | None:
        """None if the page has data in this file, else why not."""
        info = self.info
        if pfn >= info.max_mapnr or not self.bitmap1[pfn >> 3] >> (pfn & 7) & 1:
            return "hole"
        if not self.bitmap2[pfn >> 3] >> (pfn & 7) & 1:
            return "excluded"
        if not info.start_pfn <= pfn < info.end_pfn:
            return "in another file of the split set"
        return None

    def page(self, pfn: int) -> Buffer | str:
        """The page's bytes, or a string saying why it cannot be read."""
        hit = self._cache.get(pfn)
        if hit is not None:
            self._cache.move_to_end(pfn)
            return hit
        why = self._state(pfn)
        if why is not None:
            return why
        idx = self.rank(pfn) - self._first_idx
        if idx >= self.n_desc:
            return "truncated"
        data = self._load(pfn, self._read_desc(idx))
        if isinstance(data, str):
            return data
        self._cache[pfn] = data
        if len(self._cache) > self._cache_pages:
            self._cache.popitem(last=False)
        return data

    def _read_desc(self, idx: int) -> tuple[int, int, int, int]:
        off = self.info.desc_offset + idx * self._desc.size
        return self._desc.unpack(self.src.view(off, self._desc.size))

    def _load(self, pfn: int, desc: tuple[int, int, int, int]) -> Buffer | str:
        off, size, flags, _ = desc
        bs = self.page_size
        if off <= 0 or size <= 0:
            return "incomplete (empty page descriptor)"
        if size > bs:
            return self._corrupt(pfn, f"stored size {size} exceeds the block size {bs}")
        if off + size > self.src.size:
            if not self._truncated:
                self._truncated = True
                self.warnings.append(
                    f"page data at {off:#x} lies past the end of the file ({self.src.size:#x}): "
                    "the dump is truncated, such pages are unreadable"
                )
            return "truncated"
        data = self.src.view(off, size)
        codec = flags & CODEC_BITS
        if codec == 0:
            if size != bs:
                return self._corrupt(pfn, f"uncompressed page of {size} bytes (block size {bs})")
            return data
        method = _CODEC_BY_BIT.get(codec)
        if method is None:
            raise UnsupportedError(f"page compressed with several or unknown methods (flags {codec:#x})")
        try:
            page = decompress_page(method, data, bs)
        except CodecError as e:
            return self._corrupt(pfn, str(e))
        if len(page) != bs:
            return self._corrupt(pfn, f"decompressed to {len(page)} bytes, not {bs}")
        return page

    def _corrupt(self, pfn: int, why: str) -> str:
        if pfn not in self._bad and len(self._bad) < 100:
            self._bad[pfn] = why
            self.warnings.append(f"page {pfn:#x}: {why}")
        return f"corrupt: {why}"

    def extent(self, paddr: int, limit: int) -> Extent:
        pfn, off = divmod(paddr, self.page_size)
        take = min(self.page_size - off, limit)
        page = self.page(pfn)
        if isinstance(page, str):
            return Extent(None, take, page)
        return Extent(memoryview(page)[off : off + take], take)

    def page_runs(self) -> Iterator[tuple[int, int]]:
        """Runs of PFNs this file holds pages for, from the bitmaps (no page is decompressed)."""
        info = self.info
        bm1 = self.bitmap1
        for lo, hi in bit_runs(self.bitmap2, info.end_pfn, info.start_pfn):
            lo = max(lo, info.start_pfn)
            # the 2nd bitmap may mark PFNs the 1st does not (a writer's quirk): RAM only
            for a, b in bit_runs(bm1, hi, lo):
                if b > lo:
                    yield max(a, lo), b

    def chunks(
        self, start: int = 0, end: int | None = None, max_size: int = 1 << 20
    ) -> Iterator[tuple[int, Buffer]]:
        # Pages come through the sequential descriptor path and are joined into runs: a scan
        # then sees a few large buffers instead of one call per page.
        bs = self.page_size
        buf = bytearray()
        run = -1
        first = start // bs * bs
        for addr, page in self.pages(first, None if end is None else -(-end // bs) * bs):
            lo = max(start - addr, 0)
            hi = bs if end is None else min(bs, end - addr)
            if buf and (addr + lo != run + len(buf) or len(buf) + bs > max_size):
                yield run, buf
                buf = bytearray()
            if not buf:
                run = addr + lo
            buf += page if (lo, hi) == (0, bs) else memoryview(page)[lo:hi]
        if buf:
            yield run, buf

    def pages(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Buffer]]:
        bs = self.page_size
        info = self.info
        lo = max(-(-start // bs), info.start_pfn)
        hi = info.end_pfn if end is None else min(end // bs, info.end_pfn)
        dsize = self._desc.size
        batch = 4096
        bitmap1 = self.bitmap1
        for first, stop in bit_runs(self.bitmap2, hi, lo):
            first = max(first, lo)
            idx = self.rank(first) - self._first_idx
            pfn = first
            while pfn < stop and idx < self.n_desc:
                n = min(batch, stop - pfn, self.n_desc - idx)
                table = self.src.view(info.desc_offset + idx * dsize, n * dsize)
                lo_data, hi_data = 1 << 63, 0
                for desc in self._desc.iter_unpack(table):
                    if bitmap1[pfn >> 3] >> (pfn & 7) & 1:
                        page = self._load(pfn, desc)
                        if not isinstance(page, str):
                            yield pfn * bs, page
                    lo_data, hi_data = min(lo_data, desc[0]), max(hi_data, desc[0] + desc[1])
                    pfn += 1
                # keep RSS flat on big dumps: drop what this batch mapped
                self.src.release(info.desc_offset + idx * dsize, n * dsize)
                if hi_data > lo_data and hi_data - lo_data < 1 << 30:
                    self.src.release(lo_data, hi_data - lo_data)
                idx += n
