"""i386: QEMU's CPU notes of 32-bit x86 guests (no page-table walks or KASLR yet).

The note parsers are shared with x86_64 (:mod:`vmci.arch.x86_64.cpu` reads both layouts).
"""

from __future__ import annotations

from collections.abc import Sequence

from vmci.arch.base import Arch
from vmci.core.dump import CpuState, Note
from vmci.layouts.elf import EM_386


class I386Arch(Arch):
    """Linux on 32-bit x86."""

    name = "i386"
    machines = ("i386", "i486", "i586", "i686", "x86")
    elf_machines = (EM_386,)
    prstatus_size = 144
    pointer_size = 4
    byteorders = ("little",)
    page_size = 4096
    page_sizes = (4096,)
    drgn_arch = "I386"

    def cpus_from_notes(self, notes: Sequence[Note], *, byteorder: str = "little") -> list[CpuState]:
        from vmci.arch.x86_64.cpu import cpus_from_notes

        return cpus_from_notes(list(notes), self.name)


ARCH = I386Arch()

__all__ = ["ARCH", "I386Arch"]
