"""Write ELF core dumps as QEMU ``dump-guest-memory`` (the <= 7.1 and >= 7.2 layouts, paging
mode) and kexec's ``/proc/vmcore`` do; more than 65534 program headers use PN_XNUM."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any, BinaryIO

from vmci.core.memory import SWEEP, Buffer, PhysicalMemory, Range, zero_page_flags
from vmci.formats.kdump.bitmap import Exclusion, PfnBitmap, bit_runs, exclusion_mask
from vmci.layouts.elf import EM_X86_64, ET_CORE, PN_XNUM, PT_LOAD, PT_NOTE, SHT_NULL, SHT_STRTAB, elf_layout


def write_elf(
    out: BinaryIO,
    memory: PhysicalMemory,
    notes_blob: bytes = b"",
    *,
    machine: int = EM_X86_64,
    bits: int = 64,
    little: bool = True,
    style: str = "qemu",
    section_headers_first: bool = True,
    ehsize_quirk: bool = False,
    mappings: list[tuple[int, int, int]] | None = None,
    direct_map: int = 0xFFFF888000000000,
    extra_loads: list[tuple[int, int, int]] = (),  # type: ignore[assignment]
    sparse: bool = True,
    exclude: Exclusion = (),
    progress: Callable[[int, int], None] | None = None,
    align: int = 1,
) -> dict[str, Any]:
    """Write ``memory`` and the notes as an ELF core to ``out`` (a seekable binary file).

    ``style="qemu"``: PT_NOTE then one PT_LOAD per physical range, ``p_vaddr == p_paddr``
    (QEMU >= 4.0), ``p_align = 0``; with ``section_headers_first`` the 7.2+ layout (section
    headers, then program headers, ``.shstrtab`` at the end), else the <= 7.1 layout.
    ``mappings`` (``(vaddr, paddr, size)``) makes a paging-mode dump: one PT_LOAD per mapping,
    pointing into the physical blocks, ``p_offset = -1`` where nothing backs it.
    ``style="kexec"``: ``/proc/vmcore``-like, ``p_vaddr`` in the direct map at ``direct_map``;
    ``extra_loads`` adds ``(vaddr, paddr, size)`` PT_LOADs (the kernel-text segment kexec
    adds) that share the file bytes of the physical range they fall in.
    More than 65534 program headers use PN_XNUM.  Unreadable memory is written as zeros;
    with ``sparse`` all-zero pages become file holes.  The PFNs in ``exclude`` (as
    :func:`vmci.formats.kdump.write_kdump` takes them) are left out of the file as makedumpfile
    ``-E`` leaves them out: a PT_LOAD ends where a kept run of pages ends, its ``p_memsz``
    covering the excluded pages after it (``p_filesz`` 0 and ``p_offset`` 0 when a range starts
    excluded); an ``extra_loads`` segment is cut the same way.  ``align`` aligns the file offset of
    the memory (a page: readers may map it).  Memory is read once, in order; ``progress(done,
    total)`` counts bytes.
    """
    layout = elf_layout(bits, little)
    ehdr_size, ph_size, sh_size = layout.ehdr.sizeof(), layout.phdr.sizeof(), layout.shdr.sizeof()
    ps = memory.page_size
    spans = _spans(list(memory.ranges), exclude, ps)  # (paddr, filesz, memsz) per range piece
    blocks = [Range(a, f) for a, f, _ in spans if f]
    if mappings is not None:
        loads = list(mappings)
    elif style == "kexec":
        loads = [*_cut(extra_loads, spans), *((direct_map + a, a, m) for a, _, m in spans)]
    else:
        loads = [(a, a, m) for a, _, m in spans]
    phnum = 1 + len(loads)
    xnum = phnum >= PN_XNUM
    qemu72 = style == "qemu" and section_headers_first
    shnum = 2 if qemu72 else (1 if xnum else 0)
    if qemu72:
        shoff = ehdr_size
        phoff = shoff + shnum * sh_size
        note_off = phoff + phnum * ph_size
    else:
        phoff = ehdr_size
        shoff = phoff + phnum * ph_size if shnum else 0
        note_off = phoff + phnum * ph_size + shnum * sh_size
    mem_off = -(-(note_off + len(notes_blob)) // align) * align
    block_off: list[int] = []
    pos = mem_off
    for r in blocks:
        block_off.append(pos)
        pos += r.size
    strtab_off = pos
    starts = [r.start for r in blocks]

    def locate(paddr: int, size: int) -> tuple[int, int]:
        i = bisect.bisect_right(starts, paddr) - 1
        if i < 0 or paddr >= blocks[i].end:
            return -1, 0
        return block_off[i] + paddr - blocks[i].start, min(size, blocks[i].end - paddr)

    all_ones = (1 << bits) - 1
    phdrs = bytearray(
        layout.phdr.build(
            dict(
                p_type=PT_NOTE,
                p_flags=0,
                p_offset=note_off,
                p_vaddr=0,
                p_paddr=0,
                p_filesz=len(notes_blob),
                p_memsz=len(notes_blob),
                p_align=0,
            )
        )
    )
    for vaddr, paddr, size in loads:
        off, filesz = locate(paddr, size)
        if mappings is None and filesz == 0:
            off = 0  # nothing of it is in the file (makedumpfile -E writes p_offset 0)
        phdrs += layout.phdr.build(
            dict(
                p_type=PT_LOAD,
                p_flags=0,
                p_offset=off & all_ones,
                p_vaddr=vaddr,
                p_paddr=paddr,
                p_filesz=filesz,
                p_memsz=size,
                p_align=0,
            )
        )
    shdrs = b""
    if shnum:
        null = layout.shdr.build(
            dict(
                sh_name=0,
                sh_type=SHT_NULL,
                sh_flags=0,
                sh_addr=0,
                sh_offset=0,
                sh_size=0,
                sh_link=0,
                sh_info=phnum if xnum else 0,
                sh_addralign=0,
                sh_entsize=0,
            )
        )
        shdrs = null
        if qemu72:
            shdrs += layout.shdr.build(
                dict(
                    sh_name=1,
                    sh_type=SHT_STRTAB,
                    sh_flags=0,
                    sh_addr=0,
                    sh_offset=strtab_off,
                    sh_size=11,
                    sh_link=0,
                    sh_info=0,
                    sh_addralign=0,
                    sh_entsize=0,
                )
            )
    ehdr = layout.ehdr.build(
        dict(
            e_ident=dict(
                ei_class=2 if bits == 64 else 1,
                ei_data=1 if little else 2,
                ei_version=1,
                ei_osabi=0,
                ei_abiversion=0,
            ),
            e_type=ET_CORE,
            e_machine=machine,
            e_version=1,
            e_entry=0,
            e_phoff=phoff,
            e_shoff=shoff,
            e_flags=0,
            e_ehsize=8 if ehsize_quirk else ehdr_size,
            e_phentsize=ph_size,
            e_phnum=PN_XNUM if xnum else phnum,
            e_shentsize=sh_size if shnum else 0,
            e_shnum=shnum,
            e_shstrndx=shnum - 1 if qemu72 else 0,
        )
    )
    out.seek(0)
    out.write(ehdr)
    out.seek(phoff)
    out.write(phdrs)
    if shnum:
        out.seek(shoff)
        out.write(shdrs)
    out.seek(note_off)
    out.write(notes_blob)
    total = sum(r.size for r in blocks)
    done = 0
    for r, off in zip(blocks, block_off, strict=True):
        swept = r.start
        for a, data in memory.chunks(r.start, r.end):
            _write_data(out, off + a - r.start, data, ps if sparse else 0)
            done += len(data)
            if progress is not None:
                progress(done, total)
            if a + len(data) - swept >= SWEEP:  # pages a neighbour's fault mapped back in
                memory.release(swept, a + len(data) - swept)
                swept = a + len(data)
        memory.release(swept, r.end - swept)
        if not sparse:
            _fill_gaps(out, memory, r, off)
    out.seek(strtab_off)
    if qemu72:
        out.write(b"\0.shstrtab\0")
    out.truncate(strtab_off + (11 if qemu72 else 0))
    return {"phnum": phnum, "note_offset": note_off, "memory_offset": mem_off, "pn_xnum": xnum,
            "memory_bytes": total}


def _spans(ranges: list[Range], exclude: Exclusion, ps: int) -> list[tuple[int, int, int]]:
    """``(paddr, filesz, memsz)``: each range cut where excluded pages start; the excluded pages
    after a kept run make that piece's ``memsz`` larger than its ``filesz``."""
    if isinstance(exclude, tuple) and not exclude:
        return [(r.start, r.size, r.size) for r in ranges]
    nbits = max((-(-r.end // ps) for r in ranges), default=0)
    mask = exclusion_mask(exclude, nbits)
    if not isinstance(exclude, PfnBitmap):
        exclude = PfnBitmap(nbits, mask)
    out: list[tuple[int, int, int]] = []
    for r in ranges:
        cuts: list[tuple[int, int]] = []  # excluded byte runs inside r
        for lo, hi in bit_runs(mask, min(nbits, -(-r.end // ps)), r.start // ps):
            a, b = max(lo * ps, r.start), min(hi * ps, r.end)
            if b > a:
                cuts.append((a, b))
        pos = r.start
        for a, b in cuts:
            if a > pos or not out or out[-1][0] + out[-1][2] != pos:
                out.append((pos, a - pos, b - pos))
            else:  # the range starts excluded, or two excluded runs touch
                p, f, m = out[-1]
                out[-1] = (p, f, m + b - a)
            pos = b
        if pos < r.end:
            out.append((pos, r.end - pos, r.end - pos))
    return out


def _cut(loads: list[tuple[int, int, int]], spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Each ``(vaddr, paddr, size)`` load cut at the pieces of ``spans`` it overlaps (a load of
    the kernel image must not end its file data at the first excluded page)."""
    if all(f == m for _, f, m in spans):
        return list(loads)
    out: list[tuple[int, int, int]] = []
    for vaddr, paddr, size in loads:
        end = paddr + size
        for a, _, m in spans:
            lo, hi = max(a, paddr), min(a + m, end)
            if hi > lo:
                out.append((vaddr + lo - paddr, lo, hi - lo))
    return out


def _write_data(out: BinaryIO, off: int, data: Buffer, ps: int) -> None:
    """Write ``data`` at ``off``; with ``ps`` its all-zero pages are left as file holes."""
    if not ps or len(data) < ps:
        if not ps or bytes(data).count(0) != len(data):
            out.seek(off)
            out.write(data)
        return
    n = len(data) // ps
    keep = [not z for z in zero_page_flags(data, ps)]
    i = 0
    while i < n:
        if not keep[i]:
            i += 1
            continue
        j = i
        while j < n and keep[j]:
            j += 1
        out.seek(off + i * ps)
        out.write(data[i * ps:j * ps])
        i = j
    tail = data[n * ps:]
    if len(tail) and bytes(tail).count(0) != len(tail):
        out.seek(off + n * ps)
        out.write(tail)


def _fill_gaps(out: BinaryIO, memory: PhysicalMemory, r: Range, off: int) -> None:
    """Write zeros where ``memory`` could not give bytes (a non-sparse file has no holes)."""
    pos = r.start
    while pos < r.end:
        ext = memory.extent(pos, r.end - pos)
        if ext.data is None:
            out.seek(off + pos - r.start)
            out.write(bytes(ext.size))
        pos += ext.size
