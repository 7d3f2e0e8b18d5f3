"""Guest-physical memory of a migration stream: RAMBlocks mapped where the machine maps them.

For x86 ``pc`` and ``q35`` machines (:mod:`vmci.machine.x86_pc`) ``pc.ram`` is split at the
machine's below-4G size and ``pc.bios`` ends at 4 GiB; for Arm ``virt`` machines
(:mod:`vmci.machine.aarch64_virt`) ``mach-virt.ram`` starts at 1 GiB (the flash is not RAM and stays
by name, as QEMU's dump writer leaves it out); other blocks (ACPI ROM blobs, option ROMs)
are only available by name through :meth:`MigrationMemory.block`.  Reads are views into the file,
found through each block's page index (:mod:`.ram`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from vmci.core.memory import ZEROS, Buffer, Extent, PhysicalMemory, Range, Run, coalesce, find_span
from vmci.core.saved_state import RamBlockInfo
from vmci.errors import ExcludedPageError, NotFoundError
from vmci.formats.migration.ram import ABSENT, ZERO_PAGE, RamBlock
from vmci.formats.migration.stream import StreamIndex
from vmci.formats.source import Source
from vmci.machine import aarch64_virt, machine_family
from vmci.machine.x86_pc import BIOS_BLOCK, FOUR_GIB, RAM_BLOCK, bios_rom_start, ram_split

JOIN_LIMIT = 64  # pages joined into one extent (fewer calls for scans)


@dataclass(frozen=True, slots=True)
class BlockMap:
    """``size`` bytes of ``block`` from ``offset`` on, mapped at guest-physical ``start``."""

    start: int
    size: int
    block: RamBlock
    offset: int


class MigrationMemory(PhysicalMemory):
    """Guest-physical memory served from a stream's page index (views into the file)."""

    def __init__(self, src: Source, stream: StreamIndex, maps: list[BlockMap]) -> None:
        self.src = src
        self.stream = stream
        self.page_size = stream.page_size
        self._maps = sorted(maps, key=lambda m: m.start)
        self._starts = [m.start for m in self._maps]
        self._ends = [m.start + m.size for m in self._maps]
        self._ranges = [Range(m.start, m.size) for m in self._maps]

    @property
    def ranges(self) -> Sequence[Range]:
        return self._ranges

    def block(self, name: str, *, zero_fill: bool = False) -> bytes:
        """The whole RAMBlock ``name`` (``/rom@etc/acpi/tables``, ``pc.bios``, ``pc.ram``, ...)."""
        blk = self.stream.blocks.get(name)
        if blk is None:
            raise NotFoundError(f"no RAMBlock {name!r} in the stream (have: {', '.join(self.stream.blocks)})")
        return self._block_bytes(blk, 0, blk.size, zero_fill)

    def _block_bytes(self, blk: RamBlock, off: int, n: int, zero_fill: bool) -> bytes:
        ps = self.page_size
        parts: list[Buffer] = []
        pos, stop = off, off + n
        while pos < stop:
            pg, inpg = divmod(pos, ps)
            take = min(ps - inpg, stop - pos)
            fo = blk.index[pg] if pg < len(blk.index) else ABSENT
            if fo > 0:
                parts.append(self.src.view(fo + inpg, take))
            elif fo == ZERO_PAGE or zero_fill:
                parts.append(ZEROS[:take])
            else:
                raise ExcludedPageError(
                    f"page {pg * ps:#x} of RAMBlock {blk.name!r} is not in the stream", paddr=pg * ps
                )
            pos += take
        return b"".join(parts)

    def extent(self, paddr: int, limit: int) -> Extent:
        i = find_span(self._starts, self._ends, paddr, limit)
        if isinstance(i, Extent):
            return i
        m = self._maps[i]
        limit = min(limit, m.start + m.size - paddr)
        ps = self.page_size
        idx = m.block.index
        have = len(idx)
        pg, inpg = divmod(m.offset + paddr - m.start, ps)
        fo = idx[pg] if pg < have else ABSENT
        take = min(ps - inpg, limit)
        if fo > 0:
            first = self.src.view(fo + inpg, take)
            if take == limit:
                return Extent(first, take)
            parts: list[Buffer] = [first]
            cap = min(limit, JOIN_LIMIT * ps)
            pg += 1
            while take < cap and pg < have:
                fo = idx[pg]
                if fo < 0:
                    break
                n = min(ps, cap - take)
                parts.append(self.src.view(fo, n) if fo else ZEROS[:n])
                take += n
                pg += 1
            return Extent(b"".join(parts) if len(parts) > 1 else first, take)
        # a run of zero pages, or of pages the stream never sent
        cap = min(limit, len(ZEROS))
        pg += 1
        while take < cap and (idx[pg] if pg < have else ABSENT) == fo:
            take = min(take + ps, cap)
            pg += 1
        if fo == ZERO_PAGE:
            return Extent(ZEROS[:take], take)
        if pg >= have:  # past the pages the stream could have sent: one extent to the end
            take = limit
        return Extent(None, take, "not in the stream")

    def runs(self, start: int = 0, end: int | None = None) -> Iterator[Run]:
        # page classes from each block's index, run-length encoded with numpy: ZERO records and
        # pages never sent cost nothing per page; a block longer than its index (a length the
        # stream claims but never fills) is one run
        return coalesce(self._block_runs(start, end))

    def _block_runs(self, start: int, end: int | None) -> Iterator[Run]:
        import numpy as np

        ps = self.page_size
        for m in self._maps:
            a = max(m.start, start)
            b = m.start + m.size if end is None else min(m.start + m.size, end)
            if b <= a:
                continue
            first = (m.offset + a - m.start) // ps
            last = -(-(m.offset + b - m.start) // ps)
            idx = np.frombuffer(m.block.index, np.int64)[first:last]
            kinds = np.sign(idx)  # 1 data, 0 ZERO record, -1 never sent
            cuts = (np.flatnonzero(kinds[1:] != kinds[:-1]) + 1).tolist()
            bounds = [0, *cuts, len(kinds)] if len(kinds) else [0]
            pieces = [(bounds[i], bounds[i + 1], int(kinds[bounds[i]])) for i in range(len(bounds) - 1)]
            if first + len(kinds) < last:
                pieces.append((len(kinds), last - first, -1))
            base = m.start - m.offset
            for lo, hi, kind in pieces:
                ra = max((first + lo) * ps + base, a)
                rb = min((first + hi) * ps + base, b)
                if rb <= ra:
                    continue
                yield Run(ra, rb - ra, "not in the stream" if kind < 0 else None, kind == 0)


@dataclass(frozen=True)
class MemoryLayout:
    """How the stream's RAMBlocks were mapped, and what was said about it."""

    memory: MigrationMemory
    family: str | None
    family_guessed: bool
    below_4g: int | None
    blocks: tuple[RamBlockInfo, ...]
    warnings: tuple[str, ...]


def layout_memory(src: Source, stream: StreamIndex) -> MemoryLayout:
    """Map the RAMBlocks to guest-physical addresses."""
    warnings: list[str] = []
    family, guessed = machine_family(stream.machine, stream.device_names())
    maps: list[BlockMap] = []
    below: int | None = None
    ram = stream.blocks.get(RAM_BLOCK)
    virt_ram = stream.blocks.get(aarch64_virt.RAM_BLOCK)
    if family is None and stream.machine is None:
        if ram is not None:
            family, guessed = "q35", True
        elif virt_ram is not None:
            family, guessed = aarch64_virt.FAMILY, True
    if family == aarch64_virt.FAMILY and virt_ram is not None:
        if guessed:
            warnings.append(f"machine type not in the stream; guest-physical layout assumes {family}")
        maps.append(BlockMap(aarch64_virt.VIRT_MEM, virt_ram.size, virt_ram, 0))
    elif ram is not None and family in ("q35", "pc"):
        if guessed:
            warnings.append(f"machine type not in the stream; guest-physical layout assumes {family}")
        split = ram_split(family, ram.size, machine=stream.machine)
        below = split.below_4g
        maps.append(BlockMap(0, below, ram, 0))
        if split.above_4g:
            maps.append(BlockMap(FOUR_GIB, split.above_4g, ram, below))
        bios = stream.blocks.get(BIOS_BLOCK)
        bios_start = bios_rom_start(bios.size) if bios is not None else None
        if bios is not None and bios_start is not None:
            maps.append(BlockMap(bios_start, bios.size, bios, 0))
    elif stream.blocks:
        warnings.append(
            f"no guest-physical layout for machine {stream.machine or 'unknown'!r} with these RAMBlocks; "
            "RAM is available by block name only"
        )
    mapped: dict[str, list[tuple[int, int]]] = {}
    for m in maps:
        mapped.setdefault(m.block.name, []).append((m.start, m.size))
    blocks = []
    for blk in stream.blocks.values():
        data, zero, absent = blk.counts()
        gpa = mapped.get(blk.name)
        where = tuple(gpa) if gpa is not None else None
        blocks.append(RamBlockInfo(blk.name, blk.size, where, data, zero, absent))
        if absent and blk.name in mapped:
            warnings.append(f"{absent} pages of RAMBlock {blk.name!r} are not in the stream")
    memory = MigrationMemory(src, stream, maps)
    return MemoryLayout(memory, family, guessed, below, tuple(blocks), tuple(warnings))
