"""Searches of the kernel image in memory: banner, ``new_utsname``, GNU build ID, ``swapper_pg_dir``.

Each takes the page-table KASLR answer (:class:`vmci.arch.PageTableKaslr`) for where the image
lies.  Kernel facts used: the image's GNU build-ID note lives in ``.notes`` (kept in memory),
``struct new_utsname`` is six 65-byte fields (sysname ``Linux``, release at +130), and every
process's top-level table copies the shared part of ``swapper_pg_dir`` (x86_64: the kernel half).
"""

from __future__ import annotations

import re

from vmci.arch import PageTableKaslr, PageTables, get
from vmci.core.memory import PhysicalMemory
from vmci.kernel.symbols import BANNER
from vmci.layouts.note import note_header

UTS_FIELD = 65  # __NEW_UTS_LEN + 1
UTS_RELEASE_OFFSET = 2 * UTS_FIELD
# the kernel image's .notes: an Elf note "GNU", type NT_GNU_BUILD_ID (3), 20-byte descriptor
GNU_BUILD_ID = note_header("little").build({"namesz": 4, "descsz": 20, "type": 3}) + b"GNU\0"
#: x86_64 starts .rodata, which the banner opens, 2 MiB-aligned (X86_ALIGN_RODATA_BEGIN): looked at first
RODATA_ALIGN = 0x200000
_RELEASE = re.compile(rb"[\x21-\x7e]{1,64}")


def image_span(res: PageTableKaslr) -> tuple[int, int]:
    """``(pa, size)`` of the kernel image's linear run as the page tables map it."""
    return res.text_pa, max(res.text_end - res.text_va, 0)


def va_of(res: PageTableKaslr, pa: int) -> int:
    """Kernel-image VA of a physical address inside the image run."""
    return pa - res.text_pa + res.text_va


def _find(memory: PhysicalMemory, start: int, size: int, needle: bytes, *, probe: int = 0,
          limit: int = 8) -> list[int]:
    """Physical addresses of ``needle`` in ``[start, start+size)``, in order (at most ``limit``);
    with ``probe``, the first ``probe`` bytes of every :data:`RODATA_ALIGN` block are looked at
    first and a hit there is the answer."""
    hits: list[int] = []
    end = start + size
    if probe:
        for base in range(start, end, RODATA_ALIGN):
            if memory.readable(base, probe):
                at = memory.read(base, probe).find(needle)
                if at >= 0:
                    return [base + at]
    tail = b""
    for addr, buf in memory.chunks(start, end, 1 << 20):
        data = tail + bytes(buf)
        base = addr - len(tail)
        pos = data.find(needle)
        while pos >= 0:
            if base + pos not in hits:
                hits.append(base + pos)
                if len(hits) >= limit:
                    return hits
            pos = data.find(needle, pos + 1)
        tail = data[-(len(needle) - 1):] if len(needle) > 1 else b""
    return hits


def find_banner(memory: PhysicalMemory, res: PageTableKaslr) -> tuple[int, bytes] | None:
    """``(pa, line)`` of the first ``Linux version …`` string in the kernel image (the first page of
    each 2 MiB block first: see :data:`RODATA_ALIGN`)."""
    pa, size = image_span(res)
    for hit in _find(memory, pa, size, BANNER, probe=res.tables.page_size, limit=4):
        raw = memory.read(hit, 512, zero_fill=True)
        line = raw.split(b"\0", 1)[0].split(b"\n", 1)[0]
        if banner_release(line):
            return hit, line
    return None


def banner_release(line: bytes) -> str | None:
    """The release token of a ``Linux version <release> (…`` line."""
    if not line.startswith(BANNER):
        return None
    m = _RELEASE.match(line, len(BANNER))
    return m.group().decode() if m else None


def uts_release(raw: bytes) -> str | None:
    """``release`` of a ``struct new_utsname`` whose ``sysname`` is Linux, else None."""
    if len(raw) < UTS_RELEASE_OFFSET + UTS_FIELD or raw[:6] != b"Linux\0":
        return None
    rel = raw[UTS_RELEASE_OFFSET:UTS_RELEASE_OFFSET + UTS_FIELD].split(b"\0", 1)[0]
    return rel.decode() if _RELEASE.fullmatch(rel) else None


def find_utsname(memory: PhysicalMemory, res: PageTableKaslr, release: str) -> int | None:
    """Physical address of a ``new_utsname`` with ``release`` inside the kernel image."""
    pa, size = image_span(res)
    want = b"Linux\0" + bytes(UTS_FIELD - 6)
    for hit in _find(memory, pa, size, want, limit=64):
        if uts_release(memory.read(hit, 6 * UTS_FIELD, zero_fill=True)) == release:
            return hit
    return None


def find_build_id(memory: PhysicalMemory, res: PageTableKaslr) -> str | None:
    """The kernel's GNU build ID, from its ``.notes`` in the image.

    The image also embeds ELF files with build IDs of their own (the vDSOs): a note on a page that
    starts with an ELF header, or just after one, is theirs and skipped.
    """
    pa, size = image_span(res)
    ps = res.tables.page_size
    for hit in _find(memory, pa, size, GNU_BUILD_ID, limit=16):
        page = hit & ~(ps - 1)
        if any(memory.read(p, 4, zero_fill=True) == b"\x7fELF" for p in (page, page - ps)):
            continue
        return memory.read(hit + len(GNU_BUILD_ID), 20, zero_fill=True).hex()
    return None


def kernel_half(memory: PhysicalMemory, tables: PageTables) -> bytes | None:
    """The part of the top-level table at ``tables.root`` that every address space shares with
    ``swapper_pg_dir`` (x86_64: entries 256..511), or None when unreadable or not defined."""
    part = get(tables.arch).kernel_entries
    if part is None:
        return None
    start, stop, _ = part.indices(tables.page_size)
    root = tables.root & ~(tables.page_size - 1)
    return memory.read(root + start, stop - start) if memory.readable(root + start, stop - start) else None


def find_swapper_pg_dir(memory: PhysicalMemory, res: PageTableKaslr) -> int | None:
    """Physical address of ``swapper_pg_dir``: the image page whose shared part equals that of the
    table the page tables were read through (a process PGD shares it; ``swapper_pg_dir`` is in the
    image)."""
    tables = res.tables
    want = kernel_half(memory, tables)
    part = get(tables.arch).kernel_entries
    if want is None or part is None:
        return None
    pa, size = image_span(res)
    if pa <= tables.root < pa + size:
        return tables.root
    ps = tables.page_size
    start, stop, _ = part.indices(ps)
    top = want[-8:]  # the last shared entry (x86_64: the kernel-text one): cheap first filter
    for addr, buf in memory.chunks(pa, pa + size, 1 << 20):
        mv = memoryview(buf)
        first = -addr % ps
        for off in range(first, len(mv) - ps + 1, ps):
            if mv[off + stop - 8:off + stop] == top and mv[off + start:off + stop] == want:
                return addr + off
    return None


__all__ = ["GNU_BUILD_ID", "UTS_FIELD", "UTS_RELEASE_OFFSET", "banner_release", "find_banner",
           "find_build_id", "find_swapper_pg_dir", "find_utsname", "image_span", "kernel_half",
           "uts_release", "va_of"]
