"""Write kdump-compressed files as makedumpfile and QEMU do: raw or flattened, every codec, one
shared zero page, header versions 1-6, three ABIs, one file of a split set.

What to write is a :class:`~vmci.core.headers.KdumpHeader` (the reader's type: a dump's header,
``replace()``-d, writes it again); the keyword shorthand of :class:`KdumpFields` changes fields
of it.  Offsets, sizes and the bitmaps are derived from the memory and the notes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, BinaryIO, TypedDict

from vmci.core.codecs import page_compressor
from vmci.core.headers import KdumpHeader, Utsname
from vmci.core.memory import Buffer, PhysicalMemory, ceil_div, zero_page_flags
from vmci.errors import UnsupportedError, UsageError
from vmci.formats.flattened import FlatWriter
from vmci.formats.kdump.bitmap import Exclusion, bit_runs, clear_masked, exclusion_mask, set_bits
from vmci.layouts import struct_format
from vmci.layouts.kdump import COMPRESSION_FLAGS, kdump_layout, sub_header_has

if TYPE_CHECKING:
    from typing_extensions import Unpack


class KdumpFields(TypedDict, total=False):
    """Keyword shorthand for fields of the header to write."""

    compression: str
    abi: str
    little: bool
    header_version: int
    utsname: Mapping[str, str]
    phys_base: int
    dump_level: int
    nr_cpus: int
    timestamp: tuple[int, int]
    max_mapnr: int | None
    split: tuple[int, int] | None
    """``(start_pfn, end_pfn)`` of one file of a ``makedumpfile --split`` set."""


def kdump_header(base: KdumpHeader | None = None, **fields: Unpack[KdumpFields]) -> KdumpHeader:
    """``base`` (default: a v6 LP64 little-endian zlib header) with the shorthand ``fields`` set."""
    changes: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "little":
            changes["byte_order"] = "little" if value else "big"
        elif name == "utsname":
            changes["utsname"] = Utsname(**dict(value or {}))  # type: ignore[call-overload]
        elif name == "timestamp":
            changes["tv_sec"], changes["tv_usec"] = value  # type: ignore[misc]
        elif name == "max_mapnr":
            changes["max_mapnr"] = value or 0
        elif name == "split":
            span: Any = value
            if span:
                changes.update(split=1, start_pfn=span[0], end_pfn=span[1])
            else:
                changes["split"] = 0
        else:
            changes[name] = value
    return replace(base or KdumpHeader(), **changes)


class _Compressor:
    """Compresses the pages of a block, on ``threads`` threads (zlib, LZO, snappy and zstd release
    the GIL); ``pages()`` returns each page's best form by index (the page itself when stored
    uncompressed)."""

    def __init__(self, method: str, threads: int, exact: bool = True) -> None:
        self.method = method
        self.threads = max(1, threads)
        self.pool: Any = None
        self.compress = page_compressor(method, exact=exact) if method != "none" else None

    def __enter__(self) -> _Compressor:
        if self.threads > 1 and self.method != "none":
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vmci-compress")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def pages(self, block: Buffer, bs: int, which: list[int]) -> dict[int, Buffer]:
        if self.method == "none":
            return {i: block[i * bs:(i + 1) * bs] for i in which}
        compress = self.compress
        assert compress is not None

        def run(part: list[int]) -> list[bytes]:
            return [compress(block[i * bs:(i + 1) * bs]) for i in part]

        if self.pool is None or len(which) < 2 * self.threads:
            return dict(zip(which, run(which), strict=True))
        step = -(-len(which) // self.threads)
        parts = [which[k:k + step] for k in range(0, len(which), step)]
        out: dict[int, Buffer] = {}
        for part, blobs in zip(parts, self.pool.map(run, parts), strict=True):
            out.update(zip(part, blobs, strict=True))
        return out


def _clear_bits(bitmap: bytearray, lo: int, hi: int) -> int:
    for pfn in range(lo, hi):
        bitmap[pfn >> 3] &= ~(1 << (pfn & 7)) & 0xFF
    return hi - lo


class _SeekSink:
    """Writes at offsets; runs of adjacent writes (the page data) are joined into one write."""

    LIMIT = 1 << 20

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._at = -1
        self._buf = bytearray()

    def write_at(self, offset: int, data: Buffer) -> None:
        if self._buf and offset == self._at + len(self._buf) and len(self._buf) < self.LIMIT:
            self._buf += data
            return
        self._flush()
        self._at = offset
        self._buf += data

    def _flush(self) -> None:
        if self._buf:
            self.out.seek(self._at)
            self.out.write(self._buf)
            self._buf = bytearray()

    def close(self) -> None:
        self._flush()
        self.out.flush()


def write_kdump(
    out: BinaryIO,
    memory: PhysicalMemory,
    notes_blob: bytes = b"",
    header: KdumpHeader | None = None,
    *,
    flattened: bool = False,
    vmcoreinfo_span: tuple[int, int] | None = None,
    exclude: Exclusion = (),
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
    header_first: bool = False,
    exact: bool = True,
    **fields: Unpack[KdumpFields],
) -> dict[str, Any]:
    """Write ``memory`` as a kdump-compressed file (or its flattened form) to ``out``.

    ``header`` says what to write (version, ABI, byte order, utsname, phys_base, dump_level,
    compression, split range, ...); ``fields`` (:class:`KdumpFields`) override parts of it.
    ``notes_blob`` is the ELF notes as stored in a PT_NOTE; ``vmcoreinfo_span`` the
    (offset, size) of the VMCOREINFO descriptor inside it, which becomes
    ``offset_vmcoreinfo``/``size_vmcoreinfo``.  Pages that cannot be read from ``memory``, and
    the PFNs in ``exclude`` (a :class:`~vmci.formats.kdump.bitmap.PfnBitmap`, a packed bitmap,
    a numpy bool array, or PFNs), are left out of the 2nd bitmap (excluded); all-zero pages share
    one stored zero page, as QEMU and makedumpfile do.  Compression is ``zlib``, ``lzo``,
    ``snappy``, ``zstd`` or ``none``; a page is stored compressed only when that is smaller.
    A header version writes only the sub-header fields it has (``SUB_HEADER_SINCE``); version 3
    has no notes blob, so the VMCOREINFO text follows the sub-header on its own.  A split header
    (``split`` set, ``start_pfn``/``end_pfn``) writes one file of a ``makedumpfile --split``
    set: the bitmaps cover every PFN, the descriptors and data only that range.
    Pages are read once, in order (``progress(done, total)`` after each block of them), and
    compressed on ``threads`` threads (default: the CPUs this process may use, at most 8); the
    file is the same whatever the number.  ``header_first`` writes the headers (and notes) before
    the pages, as makedumpfile and QEMU order a flattened stream (``crash --osrelease`` reads a
    flattened file's first strings); the bitmaps always come last.  ``exact=False`` lets zlib pages
    come from a faster deflate (:func:`vmci.core.codecs.page_compressor`).
    Returns facts about what was written (offsets, counts).
    """
    h = kdump_header(header, **fields)
    if threads is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        threads = min(8, len(cpus))
    compression, version = h.compression, h.header_version
    if compression != "none" and compression not in COMPRESSION_FLAGS:
        raise UnsupportedError(f"unknown compression {compression!r}")
    layout = kdump_layout(h.abi, h.byte_order == "little")
    bs = memory.page_size
    ranges = list(memory.ranges)
    max_mapnr = h.max_mapnr or (-(-ranges[-1].end // bs) if ranges else 0)
    sub_size = layout.sub_header.sizeof()
    vmci_span = vmcoreinfo_span
    if sub_header_has("offset_note", version):
        tail = notes_blob
    elif sub_header_has("offset_vmcoreinfo", version) and vmcoreinfo_span:
        tail = notes_blob[vmcoreinfo_span[0] : vmcoreinfo_span[0] + vmcoreinfo_span[1]]
        vmci_span = (0, len(tail))
    else:
        tail, vmci_span = b"", None
    sub_hdr_size = ceil_div(sub_size + len(tail), bs)
    if h.split and (h.start_pfn is None or h.end_pfn is None):
        raise UsageError("a split kdump file needs start_pfn and end_pfn")
    first_pfn, end_pfn = (h.start_pfn or 0, h.end_pfn or 0) if h.split else (0, max_mapnr)
    one = ceil_div(ceil_div(max_mapnr, 8), bs) * bs
    bitmap_blocks = 2 * (one // bs)
    bitmap1 = bytearray(one)
    for r in ranges:
        set_bits(bitmap1, r.start // bs, ceil_div(r.end, bs))
    status = int(COMPRESSION_FLAGS.get(compression, 0))

    sink: Any = FlatWriter(out) if flattened else _SeekSink(out)
    desc_offset = (1 + sub_hdr_size + bitmap_blocks) * bs
    # The descriptor table precedes the data: the pages that get a descriptor (readable and not
    # excluded) are known before any page is read, from the container's own maps.
    bitmap2 = bytearray(one)
    for lo, hi in memory.page_runs():
        set_bits(bitmap2, lo, hi)
    clear_masked(bitmap2, exclusion_mask(exclude, max_mapnr))
    n_desc = sum(b - a for a, b in bit_runs(bitmap2, end_pfn, first_pfn) if b > first_pfn)
    data_offset = desc_offset + n_desc * layout.page_desc.sizeof()
    disk_header = layout.header.build(
        {
            "signature": h.signature.encode("ascii"),
            "header_version": version,
            "utsname": h.utsname.to_dict(),
            "tv_sec": h.tv_sec,
            "tv_usec": h.tv_usec,
            "status": status,
            "block_size": bs,
            "sub_hdr_size": sub_hdr_size,
            "bitmap_blocks": bitmap_blocks,
            "max_mapnr": min(max_mapnr, 0xFFFFFFFF),
            "total_ram_blocks": 0,
            "device_blocks": 0,
            "written_blocks": 0,
            "current_cpu": h.current_cpu,
            "nr_cpus": h.nr_cpus,
        }
    )
    note_off = bs + sub_size
    vmci_off, vmci_size = (note_off + vmci_span[0], vmci_span[1]) if vmci_span else (0, 0)
    ulong_mask = (1 << h.ulong_bits) - 1
    with_notes = sub_header_has("offset_note", version)
    values: dict[str, Any] = {
        "phys_base": (h.phys_base or 0) & ulong_mask,
        "dump_level": h.dump_level or 0,
        "split": 1 if h.split else 0,
        "start_pfn": min(first_pfn, ulong_mask),
        "end_pfn": min(end_pfn, ulong_mask),
        "offset_vmcoreinfo": vmci_off,
        "size_vmcoreinfo": vmci_size,
        "offset_note": note_off if with_notes and notes_blob else 0,
        "size_note": len(notes_blob) if with_notes else 0,
        "offset_eraseinfo": 0,
        "size_eraseinfo": 0,
        "start_pfn_64": first_pfn,
        "end_pfn_64": end_pfn,
        "max_mapnr_64": max_mapnr,
    }
    sub = layout.sub_header.build({k: v if sub_header_has(k, version) else 0 for k, v in values.items()})
    if header_first:
        sink.write_at(0, disk_header.ljust(bs, b"\0"))
        sink.write_at(bs, (sub + tail).ljust(sub_hdr_size * bs, b"\0"))
    zero = bytes(bs)
    pos = data_offset
    zero_desc = layout.page_desc.build({"offset": pos, "size": bs, "flags": 0, "page_flags": 0})
    sink.write_at(pos, zero)
    pos += bs
    descs = bytearray()
    desc_pos = desc_offset
    stored = zero_pages = done = 0
    pack_desc = struct_format(layout.page_desc).pack
    unreadable = 0
    with _Compressor(compression, threads, exact) as compressor:
        # one pass over the pages to write: each is read once, excluded pages are never touched
        for lo, hi in list(bit_runs(bitmap2, end_pfn, first_pfn)):
            expect = lo = max(lo, first_pfn)
            for addr, block in memory.page_blocks(lo * bs, hi * bs):
                if addr // bs > expect:  # pages the container could not give after all (corrupt data)
                    unreadable += _clear_bits(bitmap2, expect, addr // bs)
                expect = addr // bs + len(block) // bs
                zeros = zero_page_flags(block, bs)
                done += len(zeros)
                if all(zeros):  # a block of zero pages (most of a sparse guest): descriptors in bulk,
                    n = len(zeros)  # flushed at the same points as one at a time
                    zero_pages += n
                    while n:
                        take = min(n, -(-((1 << 16) - len(descs)) // len(zero_desc)))
                        descs += zero_desc * take
                        n -= take
                        if len(descs) >= 1 << 16:
                            sink.write_at(desc_pos, descs)
                            desc_pos += len(descs)
                            descs = bytearray()
                    if progress is not None:
                        progress(done, n_desc)
                    continue
                packed = compressor.pages(block, bs, [i for i, z in enumerate(zeros) if not z])
                for i, is_zero_page in enumerate(zeros):
                    if is_zero_page:
                        descs += zero_desc
                        zero_pages += 1
                    else:
                        blob = packed[i]
                        if len(blob) < bs:
                            descs += pack_desc(pos, len(blob), status, 0)
                        else:
                            blob = block[i * bs:(i + 1) * bs]
                            descs += pack_desc(pos, bs, 0, 0)
                        sink.write_at(pos, blob)
                        pos += len(blob)
                        stored += 1
                    if len(descs) >= 1 << 16:  # flushed as before: flattened records stay the same
                        sink.write_at(desc_pos, descs)
                        desc_pos += len(descs)
                        descs = bytearray()
                if progress is not None:
                    progress(done, n_desc)
            if expect < hi:
                unreadable += _clear_bits(bitmap2, expect, hi)
    sink.write_at(desc_pos, descs)

    if not header_first:
        sink.write_at(0, disk_header.ljust(bs, b"\0"))
        sink.write_at(bs, (sub + tail).ljust(sub_hdr_size * bs, b"\0"))
    bitmap_off = (1 + sub_hdr_size) * bs
    sink.write_at(bitmap_off, bitmap1)
    sink.write_at(bitmap_off + one, bitmap2)
    sink.close()
    return {
        "block_size": bs,
        "max_mapnr": max_mapnr,
        "dumpable_pages": n_desc - unreadable,
        "zero_pages": zero_pages,
        "stored_pages": stored,
        "desc_offset": desc_offset,
        "data_offset": data_offset,
        "offset_note": note_off,
        "offset_vmcoreinfo": vmci_off,
        "end": pos,
    }
