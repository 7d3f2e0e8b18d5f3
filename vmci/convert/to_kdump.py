"""Any dump to a kdump-compressed file (raw or flattened, or a ``--split`` set), laid out as
makedumpfile lays it out: header, sub-header with the notes, the two bitmaps, the page
descriptors, then the pages (:func:`vmci.formats.kdump.write_kdump`).

The header carries what readers need and QEMU leaves out or gets wrong: the kernel's whole
``utsname`` (libkdumpfile takes the architecture from it), the true ``phys_base``, the dump level,
the vCPU count; the notes carry ``NT_PRSTATUS`` and QEMU CPU state per vCPU, the VMCOREINFO
(``offset_vmcoreinfo`` points at that note's text) and the ``VMCI`` conversion record.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, BinaryIO

from vmci.convert.filters import Exclusion
from vmci.convert.source import Prepared
from vmci.core.headers import KdumpHeader
from vmci.errors import UsageError
from vmci.formats.kdump.bitmap import PfnBitmap, clear_masked, set_bits
from vmci.formats.kdump.writer import write_kdump
from vmci.formats.notes import find_desc

Progress = Callable[[int, int], None]


def kdump_header(prep: Prepared, *, compression: str, level: int) -> KdumpHeader:
    """The header to write: version 6, the architecture's ABI, the kernel's ``utsname``, the true
    ``phys_base``; the source kdump's timestamp when it had one."""
    src = prep.dump.header
    tv = (src.tv_sec, src.tv_usec) if isinstance(src, KdumpHeader) else (0, 0)
    return KdumpHeader(
        header_version=6, abi="lp64" if prep.arch.pointer_size == 8 else "i386", byte_order=prep.byteorder,
        utsname=prep.utsname, tv_sec=tv[0], tv_usec=tv[1], nr_cpus=max(1, len(prep.dump.cpus)),
        phys_base=prep.phys_base or 0, dump_level=level, compression=compression,
    )


def split_points(prep: Prepared, exclusion: Exclusion, parts: int, nbits: int) -> list[tuple[int, int]]:
    """``parts`` PFN ranges holding about the same number of stored pages each (makedumpfile
    ``--split`` balances the same count), on byte (8-PFN) boundaries, covering ``[0, nbits)``."""
    import numpy as np

    if parts < 1:
        raise UsageError(f"--split needs at least 1 file, not {parts}")
    keep = PfnBitmap(nbits)
    for lo, hi in prep.pages.page_runs():
        set_bits(keep.bits, lo, min(hi, nbits))
    clear_masked(keep.bits, exclusion.bitmap.bits)
    per_byte = np.unpackbits(np.frombuffer(bytes(keep.bits), dtype=np.uint8)).reshape(-1, 8).sum(axis=1)
    cum = np.cumsum(per_byte, dtype=np.int64)
    total = int(cum[-1]) if len(cum) else 0
    cuts = [0]
    for i in range(1, parts):
        byte = int(np.searchsorted(cum, total * i // parts, side="left")) + 1
        cuts.append(min(max(byte * 8, cuts[-1]), nbits))
    cuts.append(nbits)
    return list(itertools.pairwise(cuts))


def write_kdump_files(prep: Prepared, outs: list[BinaryIO], notes_blob: bytes, *, flattened: bool,
                      compression: str, level: int, exclusion: Exclusion,
                      progress: Progress | None = None) -> list[dict[str, Any]]:
    """Write one kdump file per ``outs`` (several: a split set); returns what each writer reported."""
    header = kdump_header(prep, compression=compression, level=level)
    span = find_desc(notes_blob, "VMCOREINFO", prep.byteorder)
    memory = prep.pages
    nbits = exclusion.bitmap.nbits
    facts: list[dict[str, Any]] = []
    if len(outs) == 1:
        return [write_kdump(outs[0], memory, notes_blob, header, flattened=flattened, vmcoreinfo_span=span,
                            exclude=exclusion.bitmap, max_mapnr=nbits, progress=progress, header_first=True,
                            exact=False)]
    ranges = split_points(prep, exclusion, len(outs), nbits)
    done_before = 0
    grand = sum(b - a for a, b in memory.page_runs())

    for out, (lo, hi) in zip(outs, ranges, strict=True):
        def part_progress(done: int, total: int, base: int = done_before) -> None:
            if progress is not None:
                progress(base + done, grand)

        f = write_kdump(out, memory, notes_blob, header, flattened=flattened, vmcoreinfo_span=span,
                        exclude=exclusion.bitmap, max_mapnr=nbits, split=(lo, hi), progress=part_progress,
                        header_first=True, exact=False)
        done_before += f["dumpable_pages"]
        facts.append(f)
    return facts


__all__ = ["kdump_header", "split_points", "write_kdump_files"]
