"""The uniform result of opening any dump: memory, notes, CPUs and header facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmci.core.memory import PhysicalMemory

if TYPE_CHECKING:
    from vmci.arch.x86_64.cpu import CpuState
    from vmci.core.saved_state import SavedState


@dataclass(frozen=True)
class Note:
    """One ELF note as found in a dump.

    ``offset`` is the file offset of the note header (in the logical, rearranged file for
    flattened dumps), ``where`` a short human description ("PT_NOTE #0", "kdump notes").
    """

    name: str
    type: int
    desc: bytes
    offset: int | None = None
    where: str = ""

    @property
    def desc_offset(self) -> int | None:
        """File offset of the descriptor (header 12 bytes + name padded to 4)."""
        if self.offset is None:
            return None
        namesz = len(self.name.encode()) + 1 if self.name else 0
        return self.offset + 12 + (-(-namesz // 4) * 4)


@dataclass
class Dump:
    """An opened dump. Use as a context manager, or call :meth:`close`."""

    path: Path
    format: str
    description: str
    memory: PhysicalMemory
    arch: str = "unknown"
    byte_order: str = "little"
    notes: list[Note] = field(default_factory=list)
    cpus: list[CpuState] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    saved_state: SavedState | None = None  # a migration stream / libvirt save image's header
    _closers: list[Any] = field(default_factory=list, repr=False)

    def notes_named(self, name: str) -> list[Note]:
        return [n for n in self.notes if n.name == name]

    def close(self) -> None:
        self.memory.close()
        while self._closers:
            self._closers.pop().close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
