"""Read ELF core dumps: QEMU ``dump-guest-memory`` (paging or not), kexec ``/proc/vmcore``,
makedumpfile ``-E``.

pyelftools parses the file header and section headers and counts program headers,
including the PN_XNUM escape (``e_phnum == 0xffff``, real count in section 0's
``sh_info``), which pyelftools' ``num_segments()`` handles.  The program-header table itself is
unpacked in bulk from :mod:`vmci.layouts.elf`: a paging dump can have 65,000+ segments and
pyelftools parses each one through construct, which takes seconds.

QEMU quirks tolerated: ``e_ehsize == 8`` (7.2+), ``EM_386`` in an ELF64 file (first vCPU not
in long mode), ``p_offset == -1`` with ``p_filesz == 0`` for mappings not backed by dumped
RAM, section headers before the program headers (7.2+), overlapping PT_LOADs (paging dumps
map one physical page at several virtual addresses).
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmci.core.dump import Dump, Note
from vmci.core.headers import ElfHeader
from vmci.core.memory import Buffer, Extent, PhysicalMemory, Range, Run, coalesce, find_span, merge_ranges
from vmci.errors import FormatError, TruncatedError
from vmci.formats.notes import conversion_record, cpus_from, decode_notes
from vmci.formats.source import Source
from vmci.layouts import struct_format
from vmci.layouts.elf import (
    EM_386,
    EM_X86_64,
    MACHINES,
    PT_LOAD,
    PT_NOTE,
    elf_layout,
)

EXCLUDED_TAIL = "excluded (in p_memsz beyond p_filesz: the dump tool left it out)"
MAX_PHYS = 1 << 52  # x86_64 and arm64 physical address width limit
HUGE_TAIL = 1 << 46  # 64 TiB described only: beyond any VM (read as one run all the same)
EM_BY_NAME = {"EM_386": EM_386, "EM_X86_64": EM_X86_64}


class SourceStream(io.RawIOBase):
    """A read-only, seekable file object over a :class:`Source` (for pyelftools)."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.src.size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), self.src.size - self.pos))
        b[:n] = self.src.view(self.pos, n)
        self.pos += n
        return n


@dataclass(frozen=True, slots=True)
class _Piece:
    start: int
    size: int
    file_off: int  # -1: no bytes in the file
    missing: str | None  # None: readable ("zero" pieces read as zeros)


def _union(pieces: list[_Piece]) -> list[_Piece]:
    """Disjoint pieces, sorted; where pieces overlap the earlier-starting (then longer) one wins."""
    out: list[_Piece] = []
    cover = -1
    for p in sorted(pieces, key=lambda p: (p.start, -p.size)):
        lo, hi = max(p.start, cover), p.start + p.size
        if hi <= lo:
            continue
        shift = lo - p.start
        out.append(_Piece(lo, hi - lo, p.file_off + shift if p.file_off >= 0 else -1, p.missing))
        cover = hi
    return out


def _subtract(pieces: list[_Piece], taken: list[_Piece]) -> list[_Piece]:
    """The parts of ``pieces`` (disjoint, sorted) outside ``taken`` (disjoint, sorted)."""
    out: list[_Piece] = []
    j = 0
    for p in pieces:
        pos, end = p.start, p.start + p.size
        while j < len(taken) and taken[j].start + taken[j].size <= pos:
            j += 1
        k = j
        while pos < end:
            if k < len(taken) and taken[k].start < end:
                t = taken[k]
                if t.start > pos:
                    out.append(_Piece(pos, t.start - pos, -1, p.missing))
                pos = max(pos, t.start + t.size)
                k += 1
            else:
                out.append(_Piece(pos, end - pos, -1, p.missing))
                pos = end
    return out


class ElfMemory(PhysicalMemory):
    """Physical memory of an ELF core: the union of its PT_LOADs, by ``p_paddr``."""

    def __init__(self, src: Source, pieces: list[_Piece]) -> None:
        self.src = src
        self._pieces = pieces
        self._starts = [p.start for p in pieces]
        self._ends = [p.start + p.size for p in pieces]
        self._ranges = merge_ranges(Range(p.start, p.size) for p in pieces)

    @classmethod
    def from_segments(cls, src: Source, segs: list[tuple[int, int, int, int]]) -> tuple[ElfMemory, list[str]]:
        """``segs``: (paddr, memsz, offset, filesz) of each PT_LOAD.

        Bytes the file holds win over bytes a segment only describes: a paging dump maps one
        physical page through many segments, and a segment's p_memsz tail (or p_offset -1) may
        cover a page that another segment backs.  Among backing segments the first one wins.
        """
        warnings: list[str] = []
        data: list[_Piece] = []
        missing: list[_Piece] = []
        truncated = 0
        for paddr, memsz, off, filesz in segs:
            if paddr + memsz > MAX_PHYS:  # no CPU addresses this: a corrupt p_paddr/p_memsz
                warnings.append(
                    f"PT_LOAD at {paddr:#x} (+{memsz:#x}) is beyond any physical address; clipped"
                )
                memsz = max(0, MAX_PHYS - paddr)
            if memsz <= 0:
                continue
            if off in ((1 << 64) - 1, (1 << 32) - 1):
                missing.append(_Piece(paddr, memsz, -1, "not in the file (QEMU: p_offset -1)"))
                continue
            backed = min(filesz, memsz)
            in_file = max(0, min(backed, src.size - off))
            truncated += backed - in_file
            if in_file:
                data.append(_Piece(paddr, in_file, off, None))
            if in_file < backed:
                missing.append(_Piece(paddr + in_file, backed - in_file, -1, "truncated"))
            if memsz - backed > HUGE_TAIL:
                warnings.append(
                    f"PT_LOAD at {paddr:#x} describes {memsz - backed:#x} bytes beyond its p_filesz "
                    f"({memsz:#x} in all): more than any machine has, a corrupt p_memsz?"
                )
            if backed < memsz:
                # The ELF spec zero-fills p_memsz beyond p_filesz, and crash does; but every dump
                # writer uses it for pages it left out (makedumpfile -E: filtered pages), so they
                # read as excluded unless the caller asks for zeros.
                missing.append(_Piece(paddr + backed, memsz - backed, -1, EXCLUDED_TAIL))
        if truncated:
            warnings.append(
                f"the file ends early: {truncated:#x} bytes of memory are missing (truncated dump)"
            )
        have = _union(data)
        pieces = sorted(have + _subtract(_union(missing), have), key=lambda p: p.start)
        return cls(src, pieces), warnings

    @property
    def ranges(self) -> Sequence[Range]:
        return self._ranges

    def extent(self, paddr: int, limit: int) -> Extent:
        i = find_span(self._starts, self._ends, paddr, limit)
        if isinstance(i, Extent):
            return i
        p = self._pieces[i]
        take = min(limit, p.start + p.size - paddr)
        if p.missing is not None:
            return Extent(None, take, p.missing)
        return Extent(self.src.view(p.file_off + paddr - p.start, take), take)

    def runs(self, start: int = 0, end: int | None = None) -> Iterator[Run]:
        # one run per piece (a described-only tail of any size costs O(1)), data pieces split
        # by the file's holes, which read as zeros
        return coalesce(self._piece_runs(start, end))

    def _piece_runs(self, start: int, end: int | None) -> Iterator[Run]:
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        for p in self._pieces[i:]:
            a, b = max(p.start, start), p.start + p.size if end is None else min(p.start + p.size, end)
            if end is not None and p.start >= end:
                break
            if b <= a:
                continue
            if p.missing is not None:
                parts = [Run(a, b - a, p.missing)]
            else:
                parts = []
                pos = a
                base = p.file_off - p.start
                for off, n in self.src.data_runs(base + a, b - a):
                    if off - base > pos:
                        parts.append(Run(pos, off - base - pos, None, True))
                    parts.append(Run(off - base, n))
                    pos = off - base + n
                if pos < b:
                    parts.append(Run(pos, b - pos, None, True))
            yield from parts

    def _run_buffers(self, run: Run, max_size: int) -> Iterator[tuple[int, Buffer]]:
        for addr, buf in super()._run_buffers(run, max_size):
            yield addr, buf
            if not run.zero:
                self.release(addr, len(buf))

    def pages(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Buffer]]:
        done = start
        for addr, page in super().pages(start, end):
            yield addr, page
            if addr + len(page) - done >= 1 << 22:
                self.release(done, addr + len(page) - done)
                done = addr + len(page)

    def release(self, paddr: int, n: int) -> None:
        """Drop the file pages behind ``[paddr, paddr + n)`` from the process (every piece it spans)."""
        end = paddr + n
        i = max(0, bisect.bisect_right(self._starts, paddr) - 1)
        while i < len(self._pieces) and self._pieces[i].start < end:
            p = self._pieces[i]
            lo, hi = max(paddr, p.start), min(end, p.start + p.size)
            if p.file_off >= 0 and hi > lo:
                self.src.release(p.file_off + lo - p.start, hi - lo)
            i += 1


def read_elf(src: Source, path: Path, *, container: str = "") -> Dump:
    """Open an ELF core held in ``src``."""
    from elftools.common.exceptions import ELFError

    try:
        from elftools.elf.elffile import ELFFile

        elf = ELFFile(SourceStream(src))  # type: ignore[arg-type]
        header = elf.header
        phnum = elf.num_segments()
    except (ELFError, ValueError, IndexError, KeyError, OSError, FormatError) as e:
        raise FormatError(f"cannot parse the ELF header: {e}", field="Elf_Ehdr", offset=0) from None
    except Exception as e:  # pyelftools' bundled construct raises its own errors on truncation
        raise TruncatedError(f"cannot parse the ELF header: {e}", field="Elf_Ehdr", offset=0) from None
    bits, little = elf.elfclass, elf.little_endian
    layout = elf_layout(bits, little)
    if header["e_type"] != "ET_CORE":
        raise FormatError(f"ELF file is {header['e_type']}, not a core dump", field="e_type", offset=16)
    from elftools.elf.enums import ENUM_E_MACHINE

    from vmci.arch import by_elf_machine

    em = header["e_machine"]
    machine_num = em if isinstance(em, int) else EM_BY_NAME.get(em, ENUM_E_MACHINE.get(em, -1))
    registered = by_elf_machine(machine_num)
    arch = registered.name if registered is not None else MACHINES.get(
        machine_num, str(em).removeprefix("EM_").lower())
    quirks: list[str] = []
    warnings: list[str] = []
    ehsize = layout.ehdr.sizeof()
    if header["e_ehsize"] != ehsize:
        quirks.append(f"e_ehsize is {header['e_ehsize']}, not {ehsize} (QEMU 7.2+ writes sizeof(pointer))")
    if bits == 64 and machine_num == EM_386:
        quirks.append("EM_386 in an ELF64 file: QEMU writes this when the first vCPU is not in long mode")

    phent = layout.phdr.sizeof()
    if header["e_phentsize"] != phent:
        raise FormatError(
            f"e_phentsize is {header['e_phentsize']}, expected {phent}",
            field="e_phentsize",
            offset=54 if bits == 64 else 42,
        )
    phoff = header["e_phoff"]
    if phoff + phnum * phent > src.size:
        fit = max(0, (src.size - phoff) // phent)
        warnings.append(f"the file holds {fit} of {phnum} program headers (truncated)")
        phnum = fit
    fmt = struct_format(layout.phdr)
    names = [s.name for s in layout.phdr.subcons if s.name]
    notes: list[Note] = []
    segs: list[tuple[int, int, int, int]] = []
    loads = 0
    for i, values in enumerate(fmt.iter_unpack(src.view(phoff, phnum * phent))):
        ph = dict(zip(names, values, strict=True))
        if ph["p_type"] == PT_LOAD:
            loads += 1
            segs.append((ph["p_paddr"], ph["p_memsz"], ph["p_offset"], ph["p_filesz"]))
        elif ph["p_type"] == PT_NOTE:
            off, size = ph["p_offset"], ph["p_filesz"]
            if off + size > src.size:
                warnings.append(f"PT_NOTE #{i} at {off:#x} runs past the end of the file; notes cut short")
                size = max(0, src.size - off)
            found, bad = decode_notes(
                src.view(off, size), base=off, byteorder="little" if little else "big", where=f"PT_NOTE #{i}"
            )
            notes += found
            warnings += bad
    memory, mw = ElfMemory.from_segments(src, segs)
    warnings += mw
    if any(s[2] in ((1 << 64) - 1, (1 << 32) - 1) for s in segs):
        quirks.append("PT_LOADs with p_offset -1 (mappings QEMU did not back with dumped RAM)")
    shoff = header["e_shoff"]
    warnings += _section_warnings(elf, src.size)
    if shoff and shoff < phoff:
        quirks.append("section headers before the program headers (QEMU 7.2+ layout)")
    converted = conversion_record(notes)
    if converted is not None:
        producer = "vmci convert"
    else:
        producer = "qemu" if any(n.name == "QEMU" for n in notes) else "kexec/makedumpfile"
    elf_header = ElfHeader(
        elf_class=bits,
        byte_order="little" if little else "big",
        e_machine=header["e_machine"],
        e_phnum=header["e_phnum"],
        program_headers=phnum,
        pt_load=loads,
        quirks=quirks,
        producer_guess=producer,
        converted=converted,
    )
    cpus = cpus_from(notes, arch, warnings, byteorder="little" if little else "big")
    return Dump(
        path=path,
        format="elf" if not container else f"elf-{container}",
        description=f"ELF{bits} core ({producer})" + (f", {container}" if container else ""),
        memory=memory,
        arch=arch,
        byte_order="little" if little else "big",
        notes=notes,
        cpus=cpus,
        header=elf_header,
        warnings=warnings,
        _closers=[src],
    )


def _section_warnings(elf: Any, size: int) -> list[str]:
    """Sections whose data the file does not hold (QEMU puts .shstrtab last: a cut shows here)."""
    out = []
    try:
        for i in range(elf.num_sections()):
            sh = elf.get_section(i).header
            if sh["sh_type"] != "SHT_NOBITS" and sh["sh_offset"] + sh["sh_size"] > size:
                out.append(
                    f"section {i} ends at {sh['sh_offset'] + sh['sh_size']:#x}, past the end of the file "
                    f"({size:#x}): the dump is truncated"
                )
    except Exception as e:  # pyelftools raises its own construct errors on cut headers
        out.append(f"section headers unreadable ({e}): the dump may be truncated")
    return out
