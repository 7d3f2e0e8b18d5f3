"""arm: QEMU's CPU notes of 32-bit Arm guests (``EM_ARM``, ELFCLASS32); no translation or KASLR.

QEMU writes them for a CPU without the AArch64 feature (``-cpu cortex-a15``, ``aarch64=off``):
a 148-byte ``CORE``/``NT_PRSTATUS`` (r0..r15, cpsr, ORIG_r0) per vCPU and, with VFP, a ``LINUX``
``NT_ARM_VFP`` note (QEMU target/arm/arch_dump.c ``arm_cpu_write_elf32_note``).  The parser is
shared with :mod:`vmci.arch.aarch64.cpu`.  Reading kernel memory of such a guest is refused with
:class:`~vmci.errors.UnsupportedError` (the registry's capability flags say so).
"""

from __future__ import annotations

from collections.abc import Sequence

from vmci.arch.base import Arch
from vmci.core.dump import CpuState, Note
from vmci.layouts.elf import EM_ARM


class ArmArch(Arch):
    """Linux on 32-bit Arm (ARMv7 and LPAE guests)."""

    name = "arm"
    machines = ("arm", "armv7l", "armv7b", "armv6l", "armv8l", "armhf", "armel")
    elf_machines = (EM_ARM,)
    prstatus_size = 148
    pointer_size = 4
    byteorders = ("little", "big")
    page_size = 4096
    page_sizes = (4096,)
    drgn_arch = "ARM"

    def cpus_from_notes(self, notes: Sequence[Note], *, byteorder: str = "little") -> list[CpuState]:
        from vmci.arch.aarch64.cpu import cpus_from_notes

        return cpus_from_notes(notes, self.name, byteorder=byteorder)


ARCH = ArmArch()

__all__ = ["ARCH", "ArmArch"]
