"""The physical memory of a kdump-compressed file: pages found through the bitmaps and the
page-descriptor table, decompressed on demand (a small LRU cache), never loaded whole.

Works on any :class:`~vmci.formats.source.Source`, so a flattened file is read in place
through its record index.

Walks (:meth:`KdumpMemory.runs`, ``chunks``, ``data_chunks``, ``pages``) go a window of PFNs at a
time, vectorised with numpy over the mmap'd bitmaps and page-descriptor table (``page_desc`` as a
structured dtype derived from its declaration in :mod:`vmci.layouts.kdump`): excluded pages,
holes, pages of another file of a split set and pages that share the stored zero page cost no
Python per page; only pages with data are decompressed.  Both QEMU (``dump.c``,
``write_dump_pages()``: ``pd_zero``) and makedumpfile (``write_kdump_pages()``) store one zero
page and point every zero page's descriptor at it; a descriptor pointing back at data stored
earlier is how such sharing shows, and the shared page is decompressed once to check it really
is zero.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from vmci.core.codecs import CodecError, decompress_page
from vmci.core.memory import ZEROS, Buffer, Extent, PhysicalMemory, Range, Run, coalesce, is_zero
from vmci.errors import UnsupportedError
from vmci.formats.kdump.bitmap import RankIndex, bit_runs, bitmap_areas, read_bitmaps
from vmci.formats.kdump.header import KdumpInfo
from vmci.formats.source import FOLIO_REACH, Source
from vmci.layouts import numpy_dtype, struct_format
from vmci.layouts.kdump import CODEC_BITS, COMPRESSION_FLAGS

_CODEC_BY_BIT = {int(bit): name for name, bit in COMPRESSION_FLAGS.items()}

#: PFNs classified per step of a walk (64 Ki PFNs: 8 KiB of each bitmap, at most 1.5 MiB of
#: descriptors; the arrays a step makes stay a few MiB, so peak RSS stays flat).
WINDOW = 1 << 16
#: Bitmap bytes read per step when the ranges and the rank table are built.
BITMAP_STEP = 1 << 20
#: Distinct shared pages decompressed per walk to learn whether they are the zero page (a
#: hostile file may share many; the others are read as data, which is correct, only slower).
MAX_SHARED_CHECKS = 16
#: Walks over at most this many PFNs (the BIOS areas where firmware tables lie, a note) go page
#: by page as :meth:`KdumpMemory.page` reads them: numpy costs more to load than they take.
SMALL_WALK = 64

# page classes of a walk, and what an unreadable one says (as :meth:`KdumpMemory.page` does)
DATA, ZERO, HOLE, EXCLUDED, OTHER_FILE, TRUNCATED, INCOMPLETE, CORRUPT = range(8)
_MISSING = {
    HOLE: "hole",
    EXCLUDED: "excluded",
    OTHER_FILE: "in another file of the split set",
    TRUNCATED: "truncated",
    INCOMPLETE: "incomplete (empty page descriptor)",
    CORRUPT: "corrupt: stored size exceeds the block size",
}


class KdumpMemory(PhysicalMemory):
    """Physical memory of one kdump-compressed file (or one file of a split set)."""

    def __init__(self, src: Source, info: KdumpInfo, cache_pages: int = 64) -> None:
        self.src = src
        self.info = info
        self.page_size = info.block_size
        self.warnings = info.warnings
        self.bitmap1, self.bitmap2 = read_bitmaps(src, info)
        self._desc = struct_format(info.layout.page_desc)
        self._bitmap_areas = bitmap_areas(info)
        # the bitmaps are read once here, a step at a time, and dropped from RSS behind (a 512 GiB
        # guest's are 16 MiB each)
        first, second = self._bitmap_areas[0][0], self._bitmap_areas[-1][0]
        self._ranges = self._ram_ranges(lambda lo, n: src.release(first + lo, n))
        self._rank = RankIndex(self.bitmap2, info.max_mapnr,
                               release=lambda lo, n: src.release(second + lo, n))
        # and the folios reaching past the bitmap area's ends
        src.release(max(0, info.bitmap_offset - FOLIO_REACH), info.bitmap_len + 2 * FOLIO_REACH)
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
        self._shared: dict[tuple[int, int, int], bool] = {}
        self._truncated = False
        if self.n_desc:  # writers store pages in PFN order: the last one ends the file
            last = self._read_desc(self.n_desc - 1)
            if last[0] + last[1] > src.size:
                self._load(-1, last)

    def _ram_ranges(self, release: Callable[[int, int], None]) -> list[Range]:
        """The runs of the 1st bitmap as ranges, read :data:`BITMAP_STEP` bytes at a time."""
        nbits, ps = self.info.max_mapnr, self.page_size
        runs: list[list[int]] = []
        nbytes = (nbits + 7) >> 3
        for lo in range(0, nbytes, BITMAP_STEP):
            hi = min(lo + BITMAP_STEP, nbytes)
            for a, b in bit_runs(self.bitmap1, min(nbits, hi * 8), lo * 8):
                if runs and runs[-1][1] == a:
                    runs[-1][1] = b
                else:
                    runs.append([a, b])
            release(lo, hi - lo)
        return [Range(a * ps, (b - a) * ps) for a, b in runs]

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
        return self._desc.unpack(self.src.read(off, self._desc.size))

    def _load(self, pfn: int, desc: tuple[int, int, int, int], *, mapped: bool = False) -> Buffer | str:
        """The page's bytes, or why not.  ``mapped``: a view of the mapped file, for sequential walks
        that release what they passed; otherwise a copy read without mapping (a single page read
        must not leave a page-cache folio mapped)."""
        off, size, flags, _ = desc
        bs = self.page_size
        if off <= 0 or size <= 0:
            return "incomplete (empty page descriptor)"
        if size > bs:
            return self._corrupt(pfn, f"stored size {size} exceeds the block size {bs}")
        if off + size > self.src.size:
            self._note_truncated(off)
            return "truncated"
        data = self.src.view(off, size) if mapped else self.src.read(off, size)
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

    # -- walks -----------------------------------------------------------------------------

    def _windows(self, lo: int, hi: int) -> Iterator[tuple[int, Any, Any, Any]]:
        """Classify PFNs ``[lo, hi)`` a window at a time: ``(first PFN, codes, positions,
        descriptors)``, where ``codes`` holds a page class per PFN and ``descriptors`` the page
        descriptors of the PFNs at ``positions`` (window-relative) that have one."""
        import numpy as np

        info = self.info
        hi = min(hi, info.max_mapnr)
        if hi <= lo:
            return
        bs = self.page_size
        b1 = np.frombuffer(self.bitmap1, np.uint8)
        b2 = np.frombuffer(self.bitmap2, np.uint8)
        dtype = numpy_dtype(info.layout.page_desc)
        dsize = dtype.itemsize
        fsize = self.src.size
        carry = -1  # the highest data offset seen so far: a descriptor at or below it shares data
        # file areas the walk reads sequentially, each with the end of what it swept so far
        sweeps = {area: area + (lo >> 3) for area, _ in self._bitmap_areas}
        desc_start = info.desc_offset + max(self.rank(lo) - self._first_idx, 0) * dsize
        sweeps[info.desc_offset] = desc_start
        for w0 in range(lo, hi, WINDOW):
            w1 = min(w0 + WINDOW, hi)
            n = w1 - w0
            shift = w0 & 7
            bytes_lo, bytes_hi = w0 >> 3, (w1 + 7) >> 3
            ram = np.unpackbits(b1[bytes_lo:bytes_hi], bitorder="little")[shift:shift + n].astype(bool)
            dumped = np.unpackbits(b2[bytes_lo:bytes_hi], bitorder="little")[shift:shift + n].astype(bool)
            codes = np.where(ram, EXCLUDED, HOLE).astype(np.int8)
            a = min(max(info.start_pfn - w0, 0), n)
            b = min(max(info.end_pfn - w0, 0), n)
            codes[:a][ram[:a] & dumped[:a]] = OTHER_FILE
            codes[b:][ram[b:] & dumped[b:]] = OTHER_FILE
            pos = np.flatnonzero(dumped[a:b]) + a
            idx0 = self.rank(w0 + a) - self._first_idx
            k = max(0, min(len(pos), self.n_desc - max(idx0, 0)))
            if idx0 < 0:  # cannot happen with a consistent rank; be safe
                k = 0
            has = pos[:k]
            codes[pos[k:]] = np.where(ram[pos[k:]], TRUNCATED, HOLE)
            desc = np.empty(0, dtype)
            if k:
                off = info.desc_offset + idx0 * dsize
                desc = np.frombuffer(self.src.view(off, k * dsize), dtype)
                offs = desc["offset"].astype(np.int64)
                sizes = desc["size"].astype(np.int64)
                flags = desc["flags"].astype(np.int64)
                cls = np.full(k, DATA, np.int8)
                empty = (offs <= 0) | (sizes <= 0)
                past = ~empty & (offs + sizes > fsize)
                big = ~empty & ~past & (sizes > bs)
                cls[empty] = INCOMPLETE
                cls[past] = TRUNCATED
                cls[big] = CORRUPT
                if past.any():
                    self._note_truncated(int(offs[past][0]))
                if big.any():
                    j = int(np.flatnonzero(big)[0])
                    why = f"stored size {int(sizes[j])} exceeds the block size {bs}"
                    self._corrupt(w0 + int(has[j]), why)
                good = cls == DATA
                prev = np.maximum.accumulate(np.concatenate(([carry], np.where(good, offs, -1))))
                carry = int(prev[-1])
                back = good & (offs <= prev[:-1])
                zero = self._zero_mask(offs, sizes, flags, back, w0, has)
                cls[zero & good] = ZERO
                codes[has] = np.where(ram[has], cls, HOLE)
            yield w0, codes, has, desc
            # keep RSS flat on big dumps: drop the bitmap bytes and descriptors mapped so far
            ends = {area: area + bytes_hi for area, _ in self._bitmap_areas}
            if k:
                ends[info.desc_offset] = info.desc_offset + (idx0 + k) * dsize
            for area, end in ends.items():
                self._sweep(sweeps, area, end)
        for area, done in sweeps.items():  # the folios reaching past the last window
            self._sweep(sweeps, area, done + FOLIO_REACH)

    def _sweep(self, sweeps: dict[int, int], area: int, end: int) -> None:
        """Release ``[swept - FOLIO_REACH, end)`` of the file area starting at ``area``."""
        lo = max(area, sweeps[area] - FOLIO_REACH)
        end = min(end, self.src.size)
        if end > lo:
            self.src.release(lo, end - lo)
        sweeps[area] = max(sweeps[area], end)

    def _zero_mask(self, offs: Any, sizes: Any, flags: Any, back: Any, w0: int, has: Any) -> Any:
        """Which descriptors point at a stored page known to be all zero; the pages that
        descriptors in ``back`` share are checked the first time they are seen."""
        import numpy as np

        def matching(want: bool | None) -> Any:
            mask = np.zeros(len(offs), bool)
            for (o, sz, fl), zero in self._shared.items():
                if want is None or zero == want:
                    mask |= (offs == o) & (sizes == sz) & (flags == fl)
            return mask

        new = back & ~matching(None)
        while new.any() and len(self._shared) < MAX_SHARED_CHECKS:
            j = int(np.argmax(new))
            key = (int(offs[j]), int(sizes[j]), int(flags[j]))
            page = self._load(w0 + int(has[j]), (*key, 0))
            self._shared[key] = not isinstance(page, str) and is_zero(page)
            new &= ~((offs == key[0]) & (sizes == key[1]) & (flags == key[2]))
        return matching(True)

    def _note_truncated(self, off: int) -> None:
        if not self._truncated:
            self._truncated = True
            self.warnings.append(
                f"page data at {off:#x} lies past the end of the file ({self.src.size:#x}): "
                "the dump is truncated, such pages are unreadable"
            )

    def _pfn_bounds(self, start: int, end: int | None) -> tuple[int, int]:
        bs = self.page_size
        return start // bs, self.info.max_mapnr if end is None else min(-(-end // bs), self.info.max_mapnr)

    def runs(self, start: int = 0, end: int | None = None) -> Iterator[Run]:
        return coalesce(self._window_runs(start, end))

    def _window_runs(self, start: int, end: int | None) -> Iterator[Run]:
        import numpy as np

        bs = self.page_size
        lo, hi = self._pfn_bounds(max(start, 0), end)
        stop = hi * bs if end is None else min(end, hi * bs)
        for w0, codes, _, _ in self._windows(lo, hi):
            cuts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
            bounds = [0, *cuts.tolist(), len(codes)]
            for i in range(len(bounds) - 1):
                code = int(codes[bounds[i]])
                a = max((w0 + bounds[i]) * bs, start)
                b = min((w0 + bounds[i + 1]) * bs, stop)
                if code != HOLE and b > a:  # holes are left out: the runs on each side stay apart
                    yield Run(a, b - a, _MISSING.get(code), code == ZERO)

    def _decoded(self, lo: int, hi: int, want_zero: bool) -> Iterator[tuple[int, Buffer | None]]:
        """``(pfn, page)`` for readable pages in ``[lo, hi)`` in PFN order: data pages
        decompressed, zero pages as ``None`` (only when ``want_zero``)."""
        if hi - lo <= SMALL_WALK:
            for pfn in range(lo, hi):
                page = self.page(pfn)
                if not isinstance(page, str) and (want_zero or not is_zero(page)):
                    yield pfn, page
            return
        import numpy as np

        for w0, codes, has, desc in self._windows(lo, hi):
            where = (codes == DATA) | (codes == ZERO) if want_zero else codes == DATA
            sel = np.flatnonzero(where)
            if not len(sel):
                continue
            # descriptor row of each selected PFN: ``has`` is sorted, so a search finds it
            rows = np.searchsorted(has, sel)
            kinds = codes[sel].tolist()
            offs = desc["offset"][rows].tolist()
            sizes = desc["size"][rows].tolist()
            flags = desc["flags"][rows].tolist()
            lo_data, hi_data = 1 << 63, 0
            for i, p in enumerate(sel.tolist()):
                if kinds[i] == ZERO:
                    yield w0 + p, None
                    continue
                o, n = offs[i], sizes[i]
                page = self._load(w0 + p, (o, n, flags[i], 0), mapped=True)
                lo_data, hi_data = min(lo_data, o), max(hi_data, o + n)
                if not isinstance(page, str):
                    yield w0 + p, page
            # keep RSS flat on big dumps: drop what this window mapped
            if hi_data > lo_data and hi_data - lo_data < 1 << 30:
                lo = max(0, lo_data - FOLIO_REACH)
                self.src.release(lo, hi_data + FOLIO_REACH - lo)

    def _joined(self, start: int, end: int | None, max_size: int,
                want_zero: bool) -> Iterator[tuple[int, Buffer]]:
        bs = self.page_size
        lo, hi = self._pfn_bounds(max(start, 0), end)
        stop = hi * bs if end is None else min(end, hi * bs)
        buf = bytearray()
        run = -1
        for pfn, page in self._decoded(lo, hi, want_zero):
            addr = pfn * bs
            a, b = max(addr, start), min(addr + bs, stop)
            if b <= a:
                continue
            if buf and (a != run + len(buf) or len(buf) + (b - a) > max_size):
                yield run, buf
                buf = bytearray()
            if not buf:
                run = a
            data: Buffer = ZEROS[:bs] if page is None else page
            buf += data if (a, b) == (addr, addr + bs) else memoryview(data)[a - addr : b - addr]
        if buf:
            yield run, buf

    def chunks(
        self, start: int = 0, end: int | None = None, max_size: int = 1 << 20
    ) -> Iterator[tuple[int, Buffer]]:
        # Pages come through the vectorised descriptor walk and are joined into runs: a scan
        # then sees a few large buffers instead of one call per page.
        return self._joined(start, end, max_size, want_zero=True)

    def data_chunks(
        self, start: int = 0, end: int | None = None, max_size: int = 1 << 20
    ) -> Iterator[tuple[int, Buffer]]:
        # only pages with stored data: those sharing the zero page are known to be zero
        return self._joined(start, end, max_size, want_zero=False)

    def pages(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Buffer]]:
        bs = self.page_size
        lo = -(-max(start, 0) // bs)
        hi = self.info.max_mapnr if end is None else min(end // bs, self.info.max_mapnr)
        zero = bytes(bs)
        for pfn, page in self._decoded(lo, hi, want_zero=True):
            yield pfn * bs, zero if page is None else page
