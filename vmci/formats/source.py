"""Byte sources under the format readers: a read-only mmap of a file, or a flattened file
read in place through its record index.  Readers see a logical file either way."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from vmci.errors import FormatError, VmciError

Buffer = bytes | bytearray | memoryview
#: Linux's ``fault_around_bytes`` default: a page fault on a file mapping maps this window around it
FAULT_AROUND = 64 << 10
#: How far a fault on a file mapping may map around the faulting page: Linux maps the whole
#: page-cache folio, and large folios reach PMD size (2 MiB).  A walk that releases the pages
#: behind it reaches this far back, or pages of a folio an earlier fault mapped stay in RSS.
FOLIO_REACH = 2 << 20
#: Reads up to this size are served by ``pread``, not through the mapping (see :meth:`FileSource.read`).
PREAD_MAX = 64 << 10


class Source(Protocol):
    """A read-only logical file."""

    size: int

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` (a copy, which small reads make without mapping the file);
        raises :class:`FormatError` past the end."""
        ...

    def view(self, offset: int, n: int) -> Buffer:
        """Like :meth:`read`, but may return a zero-copy view."""
        ...

    def release(self, offset: int, n: int) -> None:
        """Hint that ``[offset, offset+n)`` will not be needed soon (drops it from RSS)."""
        ...

    def data_runs(self, offset: int, n: int) -> Iterator[tuple[int, int]]:
        """``(offset, size)`` stretches of ``[offset, offset+n)`` that may hold non-zero bytes;
        the rest reads as zeros (a sparse file's holes, a flattened file's gaps).  O(1) per
        stretch."""
        ...

    def close(self) -> None: ...


class OSOpenError(VmciError):
    exit_code = 5


def open_readonly(path: Path) -> tuple[int, mmap.mmap | None, int]:
    """Open ``path`` read-only; return (fd, mmap or None for an empty file, size)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise OSOpenError(f"cannot open {path}: {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if size else None
    except (OSError, ValueError) as e:
        os.close(fd)
        raise OSOpenError(f"cannot map {path}: {e}") from None
    return fd, mm, size


class FileSource:
    """A whole file, memory-mapped read-only (never written, never read into memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd, self._mm, self.size = open_readonly(path)
        self._mv = memoryview(self._mm) if self._mm is not None else memoryview(b"")

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise FormatError(
                f"read of {n} bytes past the end of the file (size {self.size:#x})", offset=offset
            )

    def read(self, offset: int, n: int) -> bytes:
        self._check(offset, n)
        if 0 < n <= PREAD_MAX and self._fd >= 0:
            # a small read does not go through the mapping: a fault there maps the whole page-cache
            # folio around it (up to 2 MiB), so scattered small reads (page descriptors, single
            # pages) would each leave that much in the process's RSS
            return os.pread(self._fd, n, offset)
        return bytes(self._mv[offset : offset + n])

    def view(self, offset: int, n: int) -> memoryview:
        self._check(offset, n)
        return self._mv[offset : offset + n]

    @property
    def buffer(self) -> memoryview:
        return self._mv

    def release(self, offset: int, n: int) -> None:
        # Sequential reads of a GiB dump would otherwise leave every touched page mapped:
        # MADV_DONTNEED unmaps them from this process (the page cache keeps them), so peak
        # RSS stays flat.  Views already handed out stay valid: they fault the page back in.
        if self._mm is None or not hasattr(self._mm, "madvise"):
            return
        # Widened by the kernel's fault-around window on each side (a fault maps the pages of a
        # 64 KiB window of virtual addresses around it, some before the range): otherwise each
        # call leaves a page or two behind, 35-64 MiB over a 16 GiB dump.  A page dropped too
        # early faults back in.
        win = max(mmap.PAGESIZE, FAULT_AROUND)
        lo = max(0, offset // win * win - win)
        hi = min(-(-(offset + n) // win) * win + win, -(-self.size // mmap.PAGESIZE) * mmap.PAGESIZE)
        if hi > lo:
            self._mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def data_runs(self, offset: int, n: int) -> Iterator[tuple[int, int]]:
        # The file system knows its holes (lseek SEEK_DATA/SEEK_HOLE, Linux 3.1+): a sparse dump
        # of a big guest is mostly holes, and reading them would fault in gigabytes of zeros.
        end = min(self.size, offset + n)
        pos = max(offset, 0)
        seek_data = getattr(os, "SEEK_DATA", None)
        seek_hole = getattr(os, "SEEK_HOLE", None)
        if seek_data is None or seek_hole is None or self._fd < 0:
            if end > pos:
                yield pos, end - pos
            return
        while pos < end:
            try:
                data = os.lseek(self._fd, pos, seek_data)
            except OSError as e:  # ENXIO: no data after pos; another error: take it all as data
                if e.errno != errno.ENXIO:
                    yield pos, end - pos
                return
            if data >= end:
                return
            try:
                hole = os.lseek(self._fd, data, seek_hole)
            except OSError:
                hole = end
            yield data, min(hole, end) - data
            pos = hole

    def close(self) -> None:
        self._mv.release()
        if self._mm is not None:
            # views still exported keep the mapping alive until they go
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
