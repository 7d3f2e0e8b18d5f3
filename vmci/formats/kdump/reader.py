"""kdump-compressed dumps (makedumpfile, QEMU ``kdump-*``): reader and writer.

Reading works on any :class:`~vmci.formats.source.Source`, so a flattened file is read in place
through its record index.  The page-descriptor index of a PFN is the number of set bits below
it in the 2nd bitmap; a rank table (one count per 4096 PFNs) makes that O(1) without holding
the descriptors in memory.
"""

from __future__ import annotations

import itertools
import re
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import construct as cs

from vmci.core.dump import Dump, Note
from vmci.core.memory import Buffer, Extent, PhysicalMemory, Range, ceil_div
from vmci.errors import FormatError, TruncatedError, UnsupportedError
from vmci.formats.source import Source
from vmci.layouts import struct_format
from vmci.layouts.kdump import (
    COMPRESSION_FLAGS,
    DUMP_DH_COMPRESSED_INCOMPLETE,
    DUMP_DH_COMPRESSED_LZO,
    DUMP_DH_COMPRESSED_SNAPPY,
    DUMP_DH_COMPRESSED_ZLIB,
    DUMP_DH_COMPRESSED_ZSTD,
    DUMP_DH_EXCLUDED_VMEMMAP,
    KDUMP_SIGNATURE,
    UTS_FIELDS,
    KdumpLayout,
    kdump_layout,
    machine_abi,
)
from vmci.layouts.magic import is_kdump

RANK_SHIFT = 12  # one rank entry per 4096 PFNs (512 bitmap bytes)
STATUS_NAMES = {
    DUMP_DH_COMPRESSED_ZLIB: "zlib",
    DUMP_DH_COMPRESSED_LZO: "lzo",
    DUMP_DH_COMPRESSED_SNAPPY: "snappy",
    DUMP_DH_COMPRESSED_INCOMPLETE: "incomplete",
    DUMP_DH_EXCLUDED_VMEMMAP: "excluded-vmemmap",
    DUMP_DH_COMPRESSED_ZSTD: "zstd",
}
_RUN_TOKENS = re.compile(rb"\xff+|\x00+|[\x01-\xfe]")


def bit_runs(bitmap: Buffer, nbits: int, lo: int = 0) -> Iterator[tuple[int, int]]:
    """Yield ``(first, end)`` runs of set bits (LSB first in each byte) below ``nbits``."""
    start = -1
    for m in _RUN_TOKENS.finditer(bitmap, lo >> 3, (nbits + 7) >> 3):
        tok = m.group()
        base = m.start() * 8
        if tok[0] == 0xFF:
            if start < 0:
                start = base
        elif tok[0] == 0:
            if start >= 0:
                yield start, min(base, nbits)
                start = -1
        else:
            byte = tok[0]
            for bit in range(8):
                if byte >> bit & 1:
                    if start < 0:
                        start = base + bit
                elif start >= 0:
                    yield start, min(base + bit, nbits)
                    start = -1
    if start >= 0:
        end = min((((nbits + 7) >> 3) * 8), nbits)
        if end > start:
            yield start, end


@dataclass
class KdumpInfo:
    """Everything the headers say, checked against the file."""

    layout: KdumpLayout
    header: dict[str, Any]
    sub: dict[str, Any] | None
    version: int
    block_size: int
    max_mapnr: int
    bitmap1: bytes
    bitmap2: bytes
    desc_offset: int
    start_pfn: int
    end_pfn: int
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(self.header["status"])

    def facts(self) -> dict[str, Any]:
        h, s = self.header, self.sub or {}
        uts = {k: h["utsname"][k] for k in UTS_FIELDS}
        flags = [name for bit, name in STATUS_NAMES.items() if self.status & bit]
        facts: dict[str, Any] = {
            "signature": h["signature"].decode("ascii", "replace"),
            "header_version": self.version,
            "abi": self.layout.abi,
            "byte_order": "little" if self.layout.little else "big",
            "utsname": uts,
            "timestamp": {"tv_sec": h["tv_sec"], "tv_usec": h["tv_usec"]},
            "status": self.status,
            "status_flags": flags,
            "block_size": self.block_size,
            "sub_hdr_size": h["sub_hdr_size"],
            "bitmap_blocks": h["bitmap_blocks"],
            "max_mapnr": self.max_mapnr,
            "nr_cpus": h["nr_cpus"],
            "current_cpu": h["current_cpu"],
        }
        if self.sub is not None:
            ulong_bits = 64 if self.layout.abi == "lp64" else 32
            pb = s["phys_base"]
            facts["phys_base"] = pb
            facts["phys_base_signed"] = pb - (1 << ulong_bits) if pb >> (ulong_bits - 1) else pb
            facts["dump_level"] = s["dump_level"]
            if self.version >= 2:
                facts["split"] = s["split"]
                facts["start_pfn"], facts["end_pfn"] = self.start_pfn, self.end_pfn
            if self.version >= 3:
                facts["offset_vmcoreinfo"] = s["offset_vmcoreinfo"]
                facts["size_vmcoreinfo"] = s["size_vmcoreinfo"]
            if self.version >= 4:
                facts["offset_note"] = s["offset_note"]
                facts["size_note"] = s["size_note"]
            if self.version >= 5:
                facts["offset_eraseinfo"] = s["offset_eraseinfo"]
                facts["size_eraseinfo"] = s["size_eraseinfo"]
        return facts


def _parse(decl: cs.Construct, data: bytes, what: str, offset: int) -> dict[str, Any]:
    try:
        return dict(decl.parse(data))
    except (cs.ConstructError, UnicodeDecodeError) as e:
        raise FormatError(f"cannot parse {what}: {e}", field=what, offset=offset) from None


def _sane(h: dict[str, Any], file_size: int) -> bool:
    """Would this header parse make a readable dump?  Used to pick the ABI and byte order:
    a header read with the wrong layout fails one of these (checked against real 32- and
    64-bit headers; libkdumpfile's looser test misreads some 64-bit dumps as i386)."""
    bs = h["block_size"]
    if not (0 <= h["header_version"] <= 64 and 512 <= bs <= (1 << 20) and bs & (bs - 1) == 0):
        return False
    if h["bitmap_blocks"] <= 0 or h["bitmap_blocks"] * bs * 8 < h["max_mapnr"]:
        return False
    if h["header_version"] >= 1 and h["sub_hdr_size"] < 1:
        return False
    return h["sub_hdr_size"] >= 0 and (1 + h["sub_hdr_size"] + h["bitmap_blocks"]) * bs <= file_size


def read_info(src: Source) -> KdumpInfo:
    """Parse and check the headers and bitmaps of a kdump-compressed file."""
    head_len = kdump_layout("lp64").header.sizeof()
    if src.size < kdump_layout("i386").header.sizeof():
        raise TruncatedError("kdump header is cut short", field="disk_dump_header", offset=0)
    raw = src.read(0, min(head_len, src.size))
    if not is_kdump(raw):
        raise FormatError("not a kdump-compressed file", field="signature", offset=0)
    machine = raw[12 + 4 * 65 : 12 + 5 * 65].split(b"\0")[0].decode("ascii", "replace")
    hinted = machine_abi(machine)
    abis = [hinted] if hinted else ["lp64", "i386"]
    chosen: tuple[KdumpLayout, dict[str, Any]] | None = None
    for little in (True, False):
        for abi in abis:
            layout = kdump_layout(abi, little)
            size = layout.header.sizeof()
            if size > len(raw):
                continue
            h = _parse(layout.header, raw[:size], "disk_dump_header", 0)
            if _sane(h, src.size):
                chosen = (layout, h)
                break
        if chosen:
            break
    if chosen is None:
        raise FormatError(
            "kdump header has impossible values (block_size, header_version or bitmap size)",
            field="disk_dump_header",
            offset=0,
        )
    layout, h = chosen
    bs, version = h["block_size"], h["header_version"]
    warnings: list[str] = []

    sub = None
    if version >= 1:
        if hinted is None and layout.abi != "lp64":
            layout = _pick_32bit_sub(src, layout, bs)
        sub_size = layout.sub_header.sizeof()
        if bs + sub_size > src.size:
            raise TruncatedError("kdump sub-header is cut short", field="kdump_sub_header", offset=bs)
        sub = _parse(layout.sub_header, src.read(bs, sub_size), "kdump_sub_header", bs)

    max_mapnr = h["max_mapnr"]
    start_pfn, end_pfn = 0, max_mapnr
    if sub is not None and version >= 6:
        max_mapnr = sub["max_mapnr_64"]
    if sub is not None and version >= 2 and sub["split"]:
        start_pfn, end_pfn = (
            (sub["start_pfn_64"], sub["end_pfn_64"]) if version >= 6 else (sub["start_pfn"], sub["end_pfn"])
        )
    bitmap_off = (1 + h["sub_hdr_size"]) * bs
    bitmap_len = h["bitmap_blocks"] * bs
    if max_mapnr > bitmap_len * 8:
        raise FormatError(
            f"max_mapnr {max_mapnr:#x} needs more bits than the bitmap has", field="max_mapnr", offset=440
        )
    if bitmap_off + bitmap_len > src.size:
        raise TruncatedError(
            "kdump bitmaps extend past the end of the file", field="bitmap", offset=bitmap_off
        )
    if not end_pfn or end_pfn > max_mapnr:
        end_pfn = max_mapnr
    if start_pfn > end_pfn:
        raise FormatError("split start_pfn is above end_pfn", field="start_pfn_64", offset=bs)
    one_len = ceil_div(ceil_div(max_mapnr, 8), bs) * bs
    if h["bitmap_blocks"] >= 2 * (one_len // bs) and one_len:
        half = bitmap_len // 2
        bitmap1 = src.read(bitmap_off, half)
        bitmap2 = src.read(bitmap_off + half, half)
    else:
        bitmap1 = bitmap2 = src.read(bitmap_off, bitmap_len)
    desc_offset = (1 + h["sub_hdr_size"] + h["bitmap_blocks"]) * bs
    if h["status"] & DUMP_DH_COMPRESSED_INCOMPLETE:
        warnings.append("the dump tool marked this dump incomplete (DUMP_DH_COMPRESSED_INCOMPLETE)")
    return KdumpInfo(
        layout, h, sub, version, bs, max_mapnr, bitmap1, bitmap2, desc_offset, start_pfn, end_pfn, warnings
    )


def _pick_32bit_sub(src: Source, layout: KdumpLayout, bs: int) -> KdumpLayout:
    """i386 packs off_t after 32-bit longs; ARM/MIPS align it to 8. The notes follow the
    sub-header in every known writer, so the layout whose offset_note says so wins."""
    for abi in ("i386", "arm32"):
        cand = kdump_layout(abi, layout.little)
        size = cand.sub_header.sizeof()
        if bs + size > src.size:
            continue
        sub = _parse(cand.sub_header, src.read(bs, size), "kdump_sub_header", bs)
        if sub["offset_note"] == bs + size or bs <= sub["offset_vmcoreinfo"] < bs * 2:
            return cand
    return layout


class KdumpMemory(PhysicalMemory):
    """Physical memory of one kdump-compressed file (or one file of a split set)."""

    def __init__(self, src: Source, info: KdumpInfo, cache_pages: int = 64) -> None:
        self.src = src
        self.info = info
        self.page_size = info.block_size
        self.warnings = info.warnings
        self._desc = struct_format(info.layout.page_desc)
        self._ranges = [
            Range(a * self.page_size, (b - a) * self.page_size)
            for a, b in bit_runs(info.bitmap1, info.max_mapnr)
        ]
        self._rank = self._rank_table(info.bitmap2, info.max_mapnr)
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

    @staticmethod
    def _rank_table(bitmap: bytes, nbits: int) -> array:
        step = 1 << (RANK_SHIFT - 3)
        table = array("Q", [0])
        total = 0
        for i in range(0, (nbits + 7) >> 3, step):
            total += int.from_bytes(bitmap[i : i + step], "little").bit_count()
            table.append(total)
        return table

    def rank(self, pfn: int) -> int:
        """Number of dumped pages below ``pfn``."""
        bm = self.info.bitmap2
        blk = pfn >> RANK_SHIFT
        base = blk << (RANK_SHIFT - 3)
        byte = pfn >> 3
        n = self._rank[min(blk, len(self._rank) - 1)] + int.from_bytes(bm[base:byte], "little").bit_count()
        if pfn & 7 and byte < len(bm):
            n += (bm[byte] & ((1 << (pfn & 7)) - 1)).bit_count()
        return n

    @property
    def ranges(self) -> Sequence[Range]:
        return self._ranges

    def _state(self, pfn: int) -> str | None:
        """None if the page has data in this file, else why not."""
        info = self.info
        if pfn >= info.max_mapnr or not info.bitmap1[pfn >> 3] >> (pfn & 7) & 1:
            return "hole"
        if not info.bitmap2[pfn >> 3] >> (pfn & 7) & 1:
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
        codec = flags & (
            DUMP_DH_COMPRESSED_ZLIB
            | DUMP_DH_COMPRESSED_LZO
            | DUMP_DH_COMPRESSED_SNAPPY
            | DUMP_DH_COMPRESSED_ZSTD
        )
        if codec == 0:
            if size != bs:
                return self._corrupt(pfn, f"uncompressed page of {size} bytes (block size {bs})")
            return data
        try:
            page = decompress(codec, data, bs)
        except (ValueError, zlib.error) as e:
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
        lo = max(-(-start // bs), self.info.start_pfn)
        hi = self.info.end_pfn if end is None else min(end // bs, self.info.end_pfn)
        dsize = self._desc.size
        batch = 4096
        for first, stop in bit_runs(self.info.bitmap2, hi, lo):
            first = max(first, lo)
            idx = self.rank(first) - self._first_idx
            pfn = first
            while pfn < stop and idx < self.n_desc:
                n = min(batch, stop - pfn, self.n_desc - idx)
                table = self.src.view(self.info.desc_offset + idx * dsize, n * dsize)
                lo_data, hi_data = 1 << 63, 0
                for desc in self._desc.iter_unpack(table):
                    if self.info.bitmap1[pfn >> 3] >> (pfn & 7) & 1:
                        page = self._load(pfn, desc)
                        if not isinstance(page, str):
                            yield pfn * bs, page
                    lo_data, hi_data = min(lo_data, desc[0]), max(hi_data, desc[0] + desc[1])
                    pfn += 1
                # keep RSS flat on big dumps: drop what this batch mapped
                self.src.release(self.info.desc_offset + idx * dsize, n * dsize)
                if hi_data > lo_data and hi_data - lo_data < 1 << 30:
                    self.src.release(lo_data, hi_data - lo_data)
                idx += n


def decompress(codec: int, data: Buffer, block_size: int) -> Buffer:
    """Decompress one page, never producing more than ``block_size`` bytes."""
    if codec == DUMP_DH_COMPRESSED_ZLIB:
        d = zlib.decompressobj()
        out = d.decompress(data, block_size)
        if d.unconsumed_tail:
            raise ValueError(f"zlib data expands beyond the block size {block_size}")
        return out
    if codec == DUMP_DH_COMPRESSED_ZSTD:
        import cramjam

        buf = bytearray(block_size)
        try:
            n = cramjam.zstd.decompress_into(bytes(data), buf)
        except cramjam.DecompressionError as e:
            raise ValueError(f"zstd: {e}") from None
        return memoryview(buf)[:n]
    if codec == DUMP_DH_COMPRESSED_SNAPPY:
        import cramjam

        try:
            n = cramjam.snappy.decompress_raw_len(bytes(data))
            if n > block_size:
                raise ValueError(f"snappy data expands to {n} bytes, beyond the block size {block_size}")
            buf = bytearray(n)
            cramjam.snappy.decompress_raw_into(bytes(data), buf)
        except cramjam.DecompressionError as e:
            raise ValueError(f"snappy: {e}") from None
        return buf
    if codec == DUMP_DH_COMPRESSED_LZO:
        import lzallright

        try:
            # LZO1X cannot expand 4 KiB of input to more than about 1 MiB; the length is checked after
            return lzallright.LZOCompressor.decompress(bytes(data), output_size_hint=block_size)
        except lzallright.LZOError as e:
            raise ValueError(f"lzo: {e}") from None
    raise UnsupportedError(f"page compressed with several or unknown methods (flags {codec:#x})")


def compress(method: str, page: Buffer) -> bytes:
    """Compress one page as makedumpfile and QEMU do."""
    if method == "zlib":
        return zlib.compress(page, 1)
    if method == "zstd":
        import cramjam

        return bytes(cramjam.zstd.compress(bytes(page), level=1))
    if method == "snappy":
        import cramjam

        return bytes(cramjam.snappy.compress_raw(bytes(page)))
    if method == "lzo":
        import lzallright

        return lzallright.LZOCompressor().compress(bytes(page))
    raise UnsupportedError(f"unknown compression {method!r}")


# -- writer -------------------------------------------------------------------------------------


def _set_bits(bitmap: bytearray, lo: int, hi: int) -> None:
    """Set bits ``[lo, hi)`` (LSB first), whole bytes at a time."""
    while lo < hi and lo & 7:
        bitmap[lo >> 3] |= 1 << (lo & 7)
        lo += 1
    full_end = hi & ~7
    if lo < full_end:
        bitmap[lo >> 3 : full_end >> 3] = b"\xff" * ((full_end - lo) >> 3)
        lo = full_end
    while lo < hi:
        bitmap[lo >> 3] |= 1 << (lo & 7)
        lo += 1


def _readable_page_runs(memory: PhysicalMemory, bs: int) -> Iterator[tuple[int, int]]:
    """PFN runs ``[lo, hi)`` whose pages are wholly readable (chunks joined across edges)."""
    run_lo = run_hi = -1
    for addr, buf in memory.chunks():
        if addr != run_hi:
            if run_hi > run_lo:
                yield ceil_div(run_lo, bs), run_hi // bs
            run_lo = addr
        run_hi = addr + len(buf)
    if run_hi > run_lo:
        yield ceil_div(run_lo, bs), run_hi // bs


class _SeekSink:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write_at(self, offset: int, data: Buffer) -> None:
        self.out.seek(offset)
        self.out.write(data)

    def close(self) -> None:
        self.out.flush()


def write_kdump(
    out: BinaryIO,
    memory: PhysicalMemory,
    notes_blob: bytes = b"",
    *,
    compression: str = "zlib",
    flattened: bool = False,
    abi: str = "lp64",
    little: bool = True,
    header_version: int = 6,
    utsname: dict[str, str] | None = None,
    phys_base: int = 0,
    dump_level: int = 1,
    nr_cpus: int = 1,
    vmcoreinfo_span: tuple[int, int] | None = None,
    exclude: Iterable[int] = (),
    timestamp: tuple[int, int] = (0, 0),
    max_mapnr: int | None = None,
    split: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Write ``memory`` as a kdump-compressed file (or its flattened form) to ``out``.

    ``notes_blob`` is the ELF notes as stored in a PT_NOTE; ``vmcoreinfo_span`` the
    (offset, size) of the VMCOREINFO descriptor inside it, which becomes
    ``offset_vmcoreinfo``/``size_vmcoreinfo``.  Pages that cannot be read from ``memory``, and
    the PFNs in ``exclude``, are left out of the 2nd bitmap (excluded); all-zero pages share
    one stored zero page, as QEMU and makedumpfile do.  ``compression`` is ``zlib``, ``lzo``,
    ``snappy``, ``zstd`` or ``none``; a page is stored compressed only when that is smaller.
    ``header_version`` 1-6 writes only the sub-header fields that version has; version 3 has
    no notes blob, so the VMCOREINFO text follows the sub-header on its own.  ``split`` is the
    ``(start_pfn, end_pfn)`` range of one file of a ``makedumpfile --split`` set: the bitmaps
    cover every PFN, the descriptors and data only that range.
    Returns facts about what was written (offsets, counts).
    """
    from vmci.formats.flattened import FlatWriter

    if compression != "none" and compression not in COMPRESSION_FLAGS:
        raise UnsupportedError(f"unknown compression {compression!r}")
    layout = kdump_layout(abi, little)
    bs = memory.page_size
    ranges = list(memory.ranges)
    if max_mapnr is None:
        max_mapnr = -(-ranges[-1].end // bs) if ranges else 0
    excluded = set(exclude)
    sub_size = layout.sub_header.sizeof()
    vmci_span = vmcoreinfo_span
    if header_version >= 4:
        tail = notes_blob
    elif header_version == 3 and vmcoreinfo_span:
        tail = notes_blob[vmcoreinfo_span[0] : vmcoreinfo_span[0] + vmcoreinfo_span[1]]
        vmci_span = (0, len(tail))
    else:
        tail, vmci_span = b"", None
    sub_hdr_size = ceil_div(sub_size + len(tail), bs)
    first_pfn, end_pfn = split if split else (0, max_mapnr)
    one = ceil_div(ceil_div(max_mapnr, 8), bs) * bs
    bitmap_blocks = 2 * (one // bs)
    bitmap1 = bytearray(one)
    for r in ranges:
        _set_bits(bitmap1, r.start // bs, ceil_div(r.end, bs))
    status = COMPRESSION_FLAGS.get(compression, 0)

    sink: Any = FlatWriter(out) if flattened else _SeekSink(out)
    desc_offset = (1 + sub_hdr_size + bitmap_blocks) * bs
    # The descriptor table precedes the data, so one pass finds the pages that get a
    # descriptor (readable and not excluded) and a second writes them.
    bitmap2 = bytearray(one)
    for lo, hi in _readable_page_runs(memory, bs):
        _set_bits(bitmap2, lo, hi)
    for pfn in excluded:
        if 0 <= pfn < max_mapnr:
            bitmap2[pfn >> 3] &= ~(1 << (pfn & 7)) & 0xFF
    n_desc = sum(b - a for a, b in bit_runs(bitmap2, end_pfn, first_pfn) if b > first_pfn)
    data_offset = desc_offset + n_desc * layout.page_desc.sizeof()
    zero = bytes(bs)
    pos = data_offset
    zero_desc = layout.page_desc.build({"offset": pos, "size": bs, "flags": 0, "page_flags": 0})
    sink.write_at(pos, zero)
    pos += bs
    descs = bytearray()
    desc_pos = desc_offset
    stored = zero_pages = 0
    for addr, page in memory.pages(first_pfn * bs, end_pfn * bs):
        pfn = addr // bs
        if not bitmap2[pfn >> 3] >> (pfn & 7) & 1:
            continue  # excluded by the caller
        if page == zero:
            descs += zero_desc
            zero_pages += 1
        else:
            flags, blob = 0, page
            if compression != "none":
                packed = compress(compression, page)
                if len(packed) < bs:
                    flags, blob = status, packed
            descs += layout.page_desc.build(
                {"offset": pos, "size": len(blob), "flags": flags, "page_flags": 0}
            )
            sink.write_at(pos, blob)
            pos += len(blob)
            stored += 1
        if len(descs) >= 1 << 16:
            sink.write_at(desc_pos, descs)
            desc_pos += len(descs)
            descs = bytearray()
    sink.write_at(desc_pos, descs)

    uts = {k: "" for k in ("sysname", "nodename", "release", "version", "machine", "domainname")}
    uts.update(utsname or {})
    header = layout.header.build(
        {
            "signature": KDUMP_SIGNATURE,
            "header_version": header_version,
            "utsname": uts,
            "tv_sec": timestamp[0],
            "tv_usec": timestamp[1],
            "status": status,
            "block_size": bs,
            "sub_hdr_size": sub_hdr_size,
            "bitmap_blocks": bitmap_blocks,
            "max_mapnr": min(max_mapnr, 0xFFFFFFFF),
            "total_ram_blocks": 0,
            "device_blocks": 0,
            "written_blocks": 0,
            "current_cpu": 0,
            "nr_cpus": nr_cpus,
        }
    )
    note_off = bs + sub_size
    vmci_off, vmci_size = (note_off + vmci_span[0], vmci_span[1]) if vmci_span else (0, 0)
    ulong_mask = (1 << 64) - 1 if abi == "lp64" else (1 << 32) - 1
    fields: dict[str, Any] = {
        "phys_base": phys_base & ulong_mask,
        "dump_level": dump_level,
        "split": 1 if split else 0,
        "start_pfn": min(first_pfn, ulong_mask),
        "end_pfn": min(end_pfn, ulong_mask),
        "offset_vmcoreinfo": vmci_off,
        "size_vmcoreinfo": vmci_size,
        "offset_note": note_off if header_version >= 4 and notes_blob else 0,
        "size_note": len(notes_blob) if header_version >= 4 else 0,
        "offset_eraseinfo": 0,
        "size_eraseinfo": 0,
        "start_pfn_64": first_pfn,
        "end_pfn_64": end_pfn,
        "max_mapnr_64": max_mapnr,
    }
    since = {
        "split": 2,
        "start_pfn": 2,
        "end_pfn": 2,
        "offset_vmcoreinfo": 3,
        "size_vmcoreinfo": 3,
        "offset_note": 4,
        "size_note": 4,
        "offset_eraseinfo": 5,
        "size_eraseinfo": 5,
        "start_pfn_64": 6,
        "end_pfn_64": 6,
        "max_mapnr_64": 6,
    }
    sub = layout.sub_header.build(
        {k: v if since.get(k, 1) <= header_version else 0 for k, v in fields.items()}
    )
    sink.write_at(0, header.ljust(bs, b"\0"))
    sink.write_at(bs, (sub + tail).ljust(sub_hdr_size * bs, b"\0"))
    bitmap_off = (1 + sub_hdr_size) * bs
    sink.write_at(bitmap_off, bitmap1)
    sink.write_at(bitmap_off + one, bitmap2)
    sink.close()
    return {
        "block_size": bs,
        "max_mapnr": max_mapnr,
        "dumpable_pages": n_desc,
        "zero_pages": zero_pages,
        "stored_pages": stored,
        "desc_offset": desc_offset,
        "data_offset": data_offset,
        "offset_note": note_off,
        "offset_vmcoreinfo": vmci_off,
        "end": pos,
    }


def read_kdump(src: Source, path: Path, *, container: str = "") -> Dump:
    """Open a kdump-compressed dump held in ``src`` (a file, or a flattened file's index)."""
    from vmci.formats.notes import cpus_from, decode_notes

    info = read_info(src)
    memory = KdumpMemory(src, info)
    facts = info.facts()
    warnings = memory.warnings  # the same list: pages found corrupt later add to it
    notes: list[Note] = []
    order = "little" if info.layout.little else "big"
    s = info.sub or {}
    if info.version >= 4 and s.get("size_note"):
        off, size = s["offset_note"], s["size_note"]
        if off < 0 or off + size > src.size:
            warnings.append(f"notes at {off:#x} (+{size:#x}) lie outside the file; ignored")
        else:
            notes, bad = decode_notes(src.view(off, size), base=off, byteorder=order, where="kdump notes")
            warnings += bad
    if info.version >= 3 and s.get("size_vmcoreinfo"):
        off, size = s["offset_vmcoreinfo"], s["size_vmcoreinfo"]
        if off < 0 or off + size > src.size:
            warnings.append(f"offset_vmcoreinfo {off:#x} (+{size:#x}) lies outside the file")
        else:
            facts["vmcoreinfo_text"] = src.read(off, size)
    from vmci.arch import canonical_name, default_arch

    machine = facts["utsname"]["machine"] or default_arch(8 if info.layout.abi == "lp64" else 4).name
    arch = canonical_name(machine)
    codecs = sorted(
        {name for bit, name in STATUS_NAMES.items() if info.status & bit} - {"incomplete", "excluded-vmemmap"}
    )
    facts["compression"] = codecs[0] if codecs else "none"
    return Dump(
        path=path,
        format="kdump" if not container else f"kdump-{container}",
        description=f"kdump-compressed v{info.version} ({facts['compression']})"
        + (f", {container}" if container else ""),
        memory=memory,
        arch=arch,
        byte_order=order,
        notes=notes,
        cpus=cpus_from(notes, arch, warnings, byteorder=order),
        facts=facts,
        warnings=warnings,
        _closers=[src],
    )


class KdumpSetMemory(PhysicalMemory):
    """The memory of a ``makedumpfile --split`` set: each PFN is served by the file holding it."""

    def __init__(self, parts: list[KdumpMemory]) -> None:
        self.parts = sorted(parts, key=lambda m: m.info.start_pfn)
        self.page_size = self.parts[0].page_size
        self._starts = [m.info.start_pfn for m in self.parts]

    @property
    def ranges(self) -> Sequence[Range]:
        return self.parts[0].ranges

    def _part(self, pfn: int) -> KdumpMemory:
        import bisect

        i = max(0, bisect.bisect_right(self._starts, pfn) - 1)
        return self.parts[i]

    def extent(self, paddr: int, limit: int) -> Extent:
        return self._part(paddr // self.page_size).extent(paddr, limit)

    def pages(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Buffer]]:
        for part in self.parts:
            yield from part.pages(start, end)


def open_kdump_set(paths: Sequence[str | Path]) -> Dump:
    """Open the files of a split kdump set as one dump (any order; raw or flattened files)."""
    from vmci.formats import open_dump

    dumps = [open_dump(p, format="kdump") for p in paths]
    try:
        if not dumps:
            raise FormatError("an empty split set", field="paths")
        infos = [d.memory.info for d in dumps if isinstance(d.memory, KdumpMemory)]
        if len(infos) != len(dumps):
            raise FormatError("every file of a split set must be a kdump-compressed file", field="format")
        if len({i.max_mapnr for i in infos}) != 1 or len({i.block_size for i in infos}) != 1:
            raise FormatError(
                "the files are not of one split set (max_mapnr or block_size differ)", field="max_mapnr_64"
            )
        spans = sorted((i.start_pfn, i.end_pfn) for i in infos)
        for (_, e1), (s2, _) in itertools.pairwise(spans):
            if s2 != e1:
                raise FormatError(
                    f"the split set has a gap or overlap at PFN {min(e1, s2):#x}", field="start_pfn_64"
                )
        first = dumps[0]
        warnings = [w for d in dumps for w in d.warnings]
        if spans[0][0] != 0 or spans[-1][1] != infos[0].max_mapnr:
            warnings.append("the split set does not cover every PFN: some files are missing")
        return Dump(
            path=first.path,
            format="kdump-split",
            description=f"kdump-compressed split set of {len(dumps)} files",
            memory=KdumpSetMemory([d.memory for d in dumps]),  # type: ignore[misc]
            arch=first.arch,
            byte_order=first.byte_order,
            notes=first.notes,
            cpus=first.cpus,
            facts={**first.facts, "split_files": [str(d.path) for d in dumps]},
            warnings=warnings,
            _closers=[s for d in dumps for s in d._closers],
        )
    except BaseException:
        for d in dumps:
            d.close()
        raise
