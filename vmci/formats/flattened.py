"""Read makedumpfile's flattened format in place (the kdump or ELF dump inside it), and write it.

The reader indexes the records (destination offset, size, position in the file) in compact
arrays and serves reads of the rearranged file from the original one: nothing is copied or
rewritten.  Gaps between records read as zeros, as the holes ``makedumpfile -R`` leaves.
Where records overlap, the later one wins, as it does when ``makedumpfile -R`` replays them.
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vmci.core.dump import Dump
from vmci.core.headers import ElfHeader, FlattenedInfo, KdumpHeader
from vmci.errors import FormatError, TruncatedError
from vmci.formats.source import FOLIO_REACH, Buffer, FileSource
from vmci.layouts import struct_format
from vmci.layouts.flattened import (
    END_FLAG,
    MDF_HEADER_SIZE,
    TYPE_FLAT_HEADER,
    VERSION_FLAT_HEADER,
    build_flat_header,
    flat_header,
    flat_record,
)
from vmci.layouts.magic import ELF_MAGIC, is_flattened, is_kdump

#: Reads larger than this that the records mostly do not back are refused, not zero-filled: the
#: rearranged file's size comes from record offsets, which a corrupt file sets to anything.
BIG_READ = 64 << 20
HUGE_FILE = 1 << 46  # a rearranged file past 64 TiB is worth a warning
#: The record walk drops the file pages behind it every this many bytes: each record header read
#: through the mapping faults in the page-cache folio around it (64 KiB to 2 MiB), which over a
#: 64 GiB guest's 400 records of page descriptors kept 25 MiB mapped (peak RSS growing with the
#: dump).  Each release reaches :data:`~vmci.formats.source.FOLIO_REACH` behind.
RELEASE_STEP = 1 << 20

_HEAD = struct_format(flat_header)
_REC = struct_format(flat_record)


class FlattenedSource:
    """The rearranged file of a flattened dump, served from the flattened file."""

    def __init__(self, path: Path) -> None:
        self.file = FileSource(path)
        self.warnings: list[str] = []
        try:
            self._index()
        except BaseException:
            self.file.close()
            raise

    def _index(self) -> None:
        f = self.file
        if f.size < MDF_HEADER_SIZE:
            raise TruncatedError("flattened header block is cut short", field="makedumpfile_header", offset=0)
        sig, ftype, version = _HEAD.unpack_from(f.buffer, 0)
        if not is_flattened(sig):
            raise FormatError("not a makedumpfile flattened file", field="signature", offset=0)
        if ftype != TYPE_FLAT_HEADER:
            raise FormatError(f"unknown flattened type {ftype}", field="type", offset=16)
        if version != VERSION_FLAT_HEADER:
            self.warnings.append(f"flattened header version {version} (expected 1); reading anyway")
        dest, size, src = array("q"), array("q"), array("q")
        buf, pos, end = f.buffer, MDF_HEADER_SIZE, f.size
        ended = False
        released = 0
        while pos + _REC.size <= end:
            if pos - released >= RELEASE_STEP:
                lo = max(0, released - FOLIO_REACH)
                f.release(lo, pos - lo)
                released = pos
            off, n = _REC.unpack_from(buf, pos)
            if off == END_FLAG and n == END_FLAG:
                ended = True
                pos += _REC.size
                break
            if off < 0 or n <= 0:
                raise FormatError(
                    f"impossible record (offset {off}, size {n})", field="data_header", offset=pos
                )
            data = pos + _REC.size
            if data + n > end:
                self.warnings.append(
                    f"flattened record at {pos:#x} wants {n} bytes but the file ends at {end:#x}; "
                    "keeping what is there"
                )
                n = end - data
                if n <= 0:
                    break
            dest.append(off)
            size.append(n)
            src.append(data)
            pos = data + n
        lo = max(0, released - FOLIO_REACH)
        f.release(lo, min(pos, end) + FOLIO_REACH - lo)
        if not ended:
            self.warnings.append(
                f"flattened file has no end marker (stopped at {pos:#x} of {end:#x}): the dump is truncated"
            )
        elif pos != end:
            self.warnings.append(f"{end - pos} bytes after the flattened end marker ignored")
        self.records = len(dest)
        self._build(dest, size, src)
        if self.size > HUGE_FILE:
            self.warnings.append(
                f"records reach offset {self.size:#x} of the rearranged file but hold only "
                f"{sum(size):#x} bytes: a corrupt record offset?"
            )

    def _build(self, dest: array, size: array, src: array) -> None:
        order = sorted(range(len(dest)), key=dest.__getitem__)
        overlap = any(dest[a] + size[a] > dest[b] for a, b in itertools.pairwise(order))
        if overlap:
            runs = self._resolve(dest, size, src)
            self._dest = array("q", (r[0] for r in runs))
            self._size = array("q", (r[1] for r in runs))
            self._src = array("q", (r[2] for r in runs))
        else:
            self._dest = array("q", (dest[i] for i in order))
            self._size = array("q", (size[i] for i in order))
            self._src = array("q", (src[i] for i in order))
        self.size = max((d + s for d, s in zip(self._dest, self._size, strict=True)), default=0)

    @staticmethod
    def _resolve(dest: array, size: array, src: array) -> list[tuple[int, int, int]]:
        """Split overlapping records so that each byte comes from the last record writing it."""
        kept: list[tuple[int, int, int]] = []  # sorted, disjoint
        for i in reversed(range(len(dest))):
            lo, hi, s = dest[i], dest[i] + size[i], src[i]
            j = bisect.bisect_left(kept, (lo, -1, -1))
            if j and kept[j - 1][0] + kept[j - 1][1] > lo:
                j -= 1
            pieces = []
            cur = lo
            while j < len(kept) and kept[j][0] < hi:
                k0, k1 = kept[j][0], kept[j][0] + kept[j][1]
                if k0 > cur:
                    pieces.append((cur, k0 - cur, s + cur - lo))
                cur = max(cur, k1)
                j += 1
            if cur < hi:
                pieces.append((cur, hi - cur, s + cur - lo))
            for p in pieces:
                bisect.insort(kept, p)
        return kept

    def read(self, offset: int, n: int) -> bytes:
        if offset >= 0 and n >= 0 and offset + n <= self.size:
            i = bisect.bisect_right(self._dest, offset) - 1
            if i >= 0 and offset + n <= self._dest[i] + self._size[i]:  # one record: the file's own read
                return self.file.read(self._src[i] + offset - self._dest[i], n)
        return bytes(self.view(offset, n))

    def view(self, offset: int, n: int) -> Buffer:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise FormatError(
                f"read of {n} bytes past the end of the rearranged file (size {self.size:#x})", offset=offset
            )
        i = bisect.bisect_right(self._dest, offset) - 1
        if i >= 0 and offset + n <= self._dest[i] + self._size[i]:
            s = self._src[i] + offset - self._dest[i]
            return self.file.buffer[s : s + n]
        if n > BIG_READ:
            backed = sum(b for _, b in self.data_runs(offset, n))
            if backed < n // 2:
                raise FormatError(
                    f"read of {n:#x} bytes at {offset:#x} of the rearranged file, which holds only "
                    f"{backed:#x} of them (a corrupt record offset, or a header claiming too much)",
                    offset=offset,
                )
        out = bytearray(n)
        pos = offset
        i = max(i, 0)
        while pos < offset + n and i < len(self._dest):
            d, sz, s = self._dest[i], self._size[i], self._src[i]
            if d + sz <= pos:
                i += 1
                continue
            if d >= offset + n:
                break
            lo, hi = max(d, pos), min(d + sz, offset + n)
            out[lo - offset : hi - offset] = self.file.buffer[s + lo - d : s + hi - d]
            pos = hi
            i += 1
        return out

    def release(self, offset: int, n: int) -> None:
        i = max(0, bisect.bisect_right(self._dest, offset) - 1)
        end = offset + n
        while i < len(self._dest) and self._dest[i] < end:
            d, sz, s = self._dest[i], self._size[i], self._src[i]
            lo, hi = max(d, offset), min(d + sz, end)
            if hi > lo:
                self.file.release(s + lo - d, hi - lo)
            i += 1

    def data_runs(self, offset: int, n: int) -> Iterator[tuple[int, int]]:
        # gaps between records read as zeros: only the records hold data
        end = min(offset + n, self.size)
        i = max(0, bisect.bisect_right(self._dest, offset) - 1)
        run_lo = run_hi = -1
        while i < len(self._dest) and self._dest[i] < end:
            d, sz, s = self._dest[i], self._size[i], self._src[i]
            lo, hi = max(d, offset), min(d + sz, end)
            i += 1
            if hi <= lo:
                continue
            for a, b in self.file.data_runs(s + lo - d, hi - lo):  # holes of the flattened file too
                a, b = a - s + d, a - s + d + b
                if a == run_hi:
                    run_hi = b
                    continue
                if run_hi > run_lo:
                    yield run_lo, run_hi - run_lo
                run_lo, run_hi = a, b
        if run_hi > run_lo:
            yield run_lo, run_hi - run_lo

    def close(self) -> None:
        self.file.close()


def read_flattened(path: Path) -> Dump:
    """Open a flattened file: the kdump or ELF dump it holds, read in place."""
    flat = FlattenedSource(path)
    try:
        inner = flat.read(0, min(flat.size, 64))
        if is_kdump(inner):
            from vmci.formats.kdump.reader import read_kdump

            dump = read_kdump(flat, path, container="flattened")
        elif inner[:4] == ELF_MAGIC:
            from vmci.formats.elf.reader import read_elf

            dump = read_elf(flat, path, container="flattened")
        else:
            raise FormatError("flattened file holds neither a kdump nor an ELF dump", field="data", offset=0)
    except BaseException:
        flat.close()
        raise
    dump.warnings[:0] = flat.warnings
    assert isinstance(dump.header, KdumpHeader | ElfHeader)
    dump.header.flattened = FlattenedInfo(flat.records)
    return dump


class FlatWriter:
    """Append-only writer of a flattened stream; contiguous writes are merged into one record."""

    def __init__(self, out: BinaryIO, max_record: int = 1 << 20) -> None:
        self.out = out
        self.max_record = max_record
        self._off = -1
        self._buf = bytearray()
        out.write(build_flat_header())

    def write_at(self, offset: int, data: Buffer) -> None:
        if not len(data):
            return
        if self._buf and offset == self._off + len(self._buf) and len(self._buf) < self.max_record:
            self._buf += data
            return
        self.flush()
        self._off = offset
        self._buf = bytearray(data)

    def flush(self) -> None:
        if self._buf:
            self.out.write(_REC.pack(self._off, len(self._buf)))
            self.out.write(self._buf)
            self._buf = bytearray()

    def close(self) -> None:
        self.flush()
        self.out.write(_REC.pack(END_FLAG, END_FLAG))
