"""``makedumpfile --split`` sets: several kdump files, each holding the pages of one PFN range
(``split``, ``start_pfn_64``/``end_pfn_64`` in the sub-header), opened as one dump."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from vmci.core.dump import Dump
from vmci.core.headers import KdumpHeader
from vmci.core.memory import Buffer, Extent, PhysicalMemory, Range, Run
from vmci.errors import FormatError, UsageError
from vmci.formats.flattened import read_flattened
from vmci.formats.kdump.memory import KdumpMemory
from vmci.formats.kdump.reader import read_kdump
from vmci.formats.source import FileSource
from vmci.layouts.magic import is_flattened, is_kdump


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
        i = max(0, bisect.bisect_right(self._starts, pfn) - 1)
        return self.parts[i]

    def extent(self, paddr: int, limit: int) -> Extent:
        return self._part(paddr // self.page_size).extent(paddr, limit)

    def _spans(self, start: int, end: int | None) -> Iterator[tuple[KdumpMemory, int, int | None]]:
        """Each part with the slice of ``[start, end)`` it serves: from its first PFN (0 for
        the first part) to the next part's, as :meth:`extent` chooses."""
        bs = self.page_size
        for i, part in enumerate(self.parts):
            lo = 0 if i == 0 else part.info.start_pfn * bs
            hi = self.parts[i + 1].info.start_pfn * bs if i + 1 < len(self.parts) else None
            a = max(lo, start)
            b = hi if end is None else (end if hi is None else min(hi, end))
            if b is None or b > a:
                yield part, a, b

    def runs(self, start: int = 0, end: int | None = None) -> Iterator[Run]:
        for part, a, b in self._spans(start, end):
            yield from part.runs(a, b)

    def chunks(
        self, start: int = 0, end: int | None = None, max_size: int = 1 << 20
    ) -> Iterator[tuple[int, Buffer]]:
        for part, a, b in self._spans(start, end):
            yield from part.chunks(a, b, max_size)

    def data_chunks(
        self, start: int = 0, end: int | None = None, max_size: int = 1 << 20
    ) -> Iterator[tuple[int, Buffer]]:
        for part, a, b in self._spans(start, end):
            yield from part.data_chunks(a, b, max_size)

    def pages(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Buffer]]:
        for part, a, b in self._spans(start, end):
            yield from part.pages(a, b)

    def page_runs(self) -> Iterator[tuple[int, int]]:
        for part in self.parts:
            yield from part.page_runs()


def open_kdump_part(path: str | Path) -> Dump:
    """Open one kdump file, raw or flattened (a flattened file may also hold an ELF dump)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a dump")
    src = FileSource(path)
    try:
        head = src.read(0, min(src.size, 64))
        if is_kdump(head):
            return read_kdump(src, path)
    except BaseException:
        src.close()
        raise
    src.close()
    if is_flattened(head):
        return read_flattened(path)
    raise FormatError("not a kdump dump", field="magic", offset=0)


def open_kdump_set(paths: Sequence[str | Path]) -> Dump:
    """Open the files of a split kdump set as one dump (any order; raw or flattened files)."""
    dumps: list[Dump] = []
    try:
        for p in paths:
            dumps.append(open_kdump_part(p))
        if not dumps:
            raise FormatError("an empty split set", field="paths")
        parts = [d.memory for d in dumps if isinstance(d.memory, KdumpMemory)]
        if len(parts) != len(dumps):
            raise FormatError("every file of a split set must be a kdump-compressed file", field="format")
        infos = [m.info for m in parts]
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
        assert isinstance(first.header, KdumpHeader)
        return Dump(
            path=first.path,
            format="kdump-split",
            description=f"kdump-compressed split set of {len(dumps)} files",
            memory=KdumpSetMemory(parts),
            arch=first.arch,
            byte_order=first.byte_order,
            notes=first.notes,
            cpus=first.cpus,
            header=replace(first.header, split_files=tuple(str(d.path) for d in dumps)),
            warnings=warnings,
            _closers=[s for d in dumps for s in d._closers],
        )
    except BaseException:
        for d in dumps:
            d.close()
        raise
