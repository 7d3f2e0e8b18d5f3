"""The uniform result of opening any dump: memory, notes, CPUs and the container's typed header.

Plain data only: the note parsers that fill :class:`CpuState` live with their architecture
(:mod:`vmci.arch`), the readers that fill :class:`Dump` in :mod:`vmci.formats`.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmci.core.headers import ContainerHeader
from vmci.core.memory import PhysicalMemory

_CR0_PG = 1 << 31  # x86 CR0.PG: paging on
_CR4_LA57 = 1 << 12  # x86 CR4.LA57: 5-level paging

if TYPE_CHECKING:
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
class CpuState:
    """One vCPU as the dump saved it.  Values that no source provided are ``None`` (or absent from
    ``regs``).

    ``regs`` holds the general registers under the kernel's ``user_regs_struct`` names of the
    architecture (``rax``.. on x86_64, ``eax``.. on i386) plus whatever else the sources give by
    name (segment details on x86).  The control and descriptor-table registers are x86's (QEMU
    saves them in its ``QEMU`` note, and in the migration stream); they stay ``None`` on
    architectures whose dumps carry no system registers.  ``mmu`` says whether address translation
    is on where the architecture knows it without x86 control registers (arm64: the exception
    level and PC of a dump's note, ``SCTLR_EL1.M`` of a migration stream); None leaves the answer
    to CR0/CR3.  ``sources`` names what filled this state, ``warnings`` what disagreed.
    """

    index: int
    pid: int | None = None
    regs: dict[str, int] = field(default_factory=dict)
    cr0: int | None = None
    cr1: int | None = None
    cr2: int | None = None
    cr3: int | None = None
    cr4: int | None = None
    gdt_base: int | None = None
    gdt_limit: int | None = None
    idt_base: int | None = None
    idt_limit: int | None = None
    kernel_gs_base: int | None = None
    qemu_version: int | None = None
    crash_occurred: bool | None = None
    mmu: bool | None = None
    sources: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def paging(self) -> bool:
        """Address translation is on: :attr:`mmu` when set, else CR0.PG set and a non-zero CR3 (False
        without control registers)."""
        if self.mmu is not None:
            return self.mmu
        return self.cr0 is not None and bool(self.cr0 & _CR0_PG) and bool(self.cr3)

    @property
    def la57(self) -> bool:
        """CR4.LA57: 5-level paging."""
        return self.cr4 is not None and bool(self.cr4 & _CR4_LA57)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.mmu is None:  # only architectures without CR0/CR3 say it
            del out["mmu"]
        return out


@dataclass
class Dump:
    """An opened dump. Use as a context manager, or call :meth:`close`.

    ``header`` is the container's own header, typed per container
    (:class:`~vmci.core.headers.KdumpHeader`, :class:`~vmci.core.headers.ElfHeader`, ...).
    """

    path: Path
    format: str
    description: str
    memory: PhysicalMemory
    arch: str = "unknown"
    byte_order: str = "little"
    notes: list[Note] = field(default_factory=list)
    cpus: list[CpuState] = field(default_factory=list)
    header: ContainerHeader = field(default_factory=ContainerHeader)
    warnings: list[str] = field(default_factory=list)
    _closers: list[Any] = field(default_factory=list, repr=False)

    @property
    def saved_state(self) -> SavedState | None:
        """A saved VM's header (migration stream, libvirt save image), else ``None``."""
        module = sys.modules.get("vmci.core.saved_state")  # not imported: no saved VM was opened
        return self.header if module is not None and isinstance(self.header, module.SavedState) else None

    @property
    def facts(self) -> dict[str, Any]:
        """The header as ``vmci info`` shows it (derived from :attr:`header`, read-only)."""
        return self.header.to_dict()

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
