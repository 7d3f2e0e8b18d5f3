"""Kernel memory as the log readers see it: a region read lazily page by page (a missing page
loses only what lies in it), integers and C strings out of raw bytes, and the record fields that
the VMCOREINFO does not export (``facility``/``flags``/``level``, the caller id)."""

from __future__ import annotations

from vmci.errors import VmciError
from vmci.kernel.printk.records import KernelReader
from vmci.layouts.printk import CALLER_CPU, Lookup

_PAGE = 4096
_CHUNK = 1 << 20


def lookup(kmem: KernelReader) -> Lookup:
    def get(kind: str, name: str) -> int | None:
        if kind == "SIZE":
            return kmem.size(name)
        if kind == "LENGTH":
            return kmem.length(name)
        struct, _, member = name.partition(".")
        return kmem.offset(struct, member)

    return get


class Region:
    """``size`` bytes of kernel memory at ``base``, read lazily in 1 MiB chunks; pages the dump
    cannot provide read as None, so one missing page loses only what lies in it.  (Any
    :class:`~vmci.errors.VmciError` of a read counts as "not in the dump": the addresses come
    from guest memory and may be anything.)"""

    def __init__(self, kmem: KernelReader, base: int, size: int) -> None:
        self.kmem, self.base = kmem, base
        self.size = max(0, min(size, (1 << 64) - base))  # nothing past the top of the address space
        self._pages: dict[int, bytes | None] = {}

    def _load(self, page: int) -> None:
        start = max(page * _PAGE // _CHUNK * _CHUNK, self.base)
        end = min((page * _PAGE // _CHUNK + 1) * _CHUNK, self.base + self.size)
        try:
            blob = self.kmem.read(start, end - start)
        except VmciError:
            blob = None
        va = start
        while va < end:
            nxt = min((va // _PAGE + 1) * _PAGE, end)
            if blob is not None:
                self._pages[va // _PAGE] = blob[va - start:nxt - start]
            else:
                try:
                    self._pages[va // _PAGE] = self.kmem.read(va, nxt - va)
                except VmciError:
                    self._pages[va // _PAGE] = None
            va = nxt

    def get(self, off: int, n: int) -> bytes | None:
        if off < 0 or n < 0 or off + n > self.size:
            return None
        if n == 0:
            return b""
        va = self.base + off
        parts = []
        for page in range(va // _PAGE, (va + n - 1) // _PAGE + 1):
            if page not in self._pages:
                self._load(page)
            data = self._pages[page]
            if data is None:
                return None
            pstart = max(page * _PAGE, self.base)
            lo = max(va, pstart) - pstart
            hi = min(va + n, page * _PAGE + _PAGE) - pstart
            parts.append(data[lo:hi])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readable(self, off: int, n: int) -> bytes:
        """The bytes of ``[off, off + n)`` the dump holds, missing pages left out."""
        out, end = [], min(off + n, self.size)
        while off < end:
            step = min(_PAGE - (self.base + off) % _PAGE, end - off)
            out.append(self.get(off, step) or b"")
            off += step
        return b"".join(out)


def int_at(buf: bytes, off: int, n: int, byteorder: str) -> int:
    return int.from_bytes(buf[off:off + n], byteorder)  # type: ignore[arg-type]


def cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def record_meta(raw: bytes, off: int | None, byteorder: str) -> tuple[int | None, int | None, int | None]:
    """(facility, flags, level) from the two bytes at ``off``: ``u8 facility; u8 flags:5, level:3``
    (GCC allocates bitfields from the least significant bit on little-endian targets)."""
    if off is None:
        return None, None, None
    bits = raw[off + 1]
    if byteorder == "little":
        return raw[off], bits & 0x1F, bits >> 5
    return raw[off], bits >> 3, bits & 7


def split_caller(cid: int | None) -> tuple[int | None, int | None]:
    if cid is None:
        return None, None
    if cid & CALLER_CPU:
        return None, cid & ~CALLER_CPU
    return cid, None


def read_uint(kmem: KernelReader, addr: int, n: int) -> int:
    """The ``n``-byte unsigned integer at kernel virtual ``addr``."""
    return int_at(kmem.read(addr, n), 0, n, kmem.byteorder)
