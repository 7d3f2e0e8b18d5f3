"""QEMU's Arm ``virt`` machine: where guest RAM and the fw_cfg device sit in guest-physical space.

Facts from QEMU hw/arm/virt.c (``base_memmap``, ``machvirt_init``): the flash (two 64 MiB pflash
devices, ``virt.flash0`` with the firmware and ``virt.flash1`` with its variables) occupies
``[0, 0x08000000)``; MMIO devices lie below 1 GiB, among them the UART (pl011) at 0x09000000, the
RTC at 0x09010000 and fw_cfg at 0x09020000 (0x18 bytes: data at +0, selector at +8, DMA address at
+0x10, all big-endian registers; ``virt`` always has DMA); RAM is one RAMBlock,
``mach-virt.ram``, mapped contiguously from ``VIRT_MEM`` = 1 GiB.  QEMU's dump writer dumps RAM
only (the flash is a ROM device), and its kdump writer's initial ``phys_base`` guess is that RAM
start.  A ``-kernel`` Image of a kernel >= 5.8 is loaded at RAM + 2 MiB (hw/arm/boot.c).
Machine types are ``virt`` and ``virt-X.Y``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vmci.errors import UsageError

FAMILY = "virt"
VIRT_MEM = 0x40000000  # base_memmap[VIRT_MEM].base: RAM starts at 1 GiB
#: the most RAM below the high-memory region (LEGACY_RAMLIMIT_BYTES, 255 GiB)
RAM_LIMIT = 255 << 30
RAM_BLOCK = "mach-virt.ram"
FLASH_BLOCKS = ("virt.flash0", "virt.flash1")
FLASH_BASE, FLASH_SIZE = 0, 0x08000000  # both pflash devices, 64 MiB each
UART_BASE = 0x09000000
FW_CFG_BASE, FW_CFG_SIZE = 0x09020000, 0x18
FW_CFG_DATA, FW_CFG_SELECTOR, FW_CFG_DMA = 0x0, 0x8, 0x10
KERNEL_LOAD = VIRT_MEM + 0x200000  # an Image with text_offset 0 (Linux >= 5.8)

# devices whose names in a stream's VM description give the machine away (no machine type)
_VIRT_DEVICES = ("arm_gic", "pl011", "pl061", "gpex_root")


def machine_family(machine: str | None, device_names: Iterable[str] = ()) -> tuple[str | None, bool]:
    """``("virt" | None, guessed)`` from the machine type (``virt``, ``virt-7.2``); without one,
    guessed from the names of the machine's devices (GIC, PL011)."""
    if machine:
        return (FAMILY, False) if re.fullmatch(r"virt(-\d+\.\d+)?", machine) else (None, False)
    names = " ".join(device_names)
    return (FAMILY, True) if any(d in names for d in _VIRT_DEVICES) else (None, True)


@dataclass(frozen=True)
class VirtRam:
    """``mach-virt.ram`` of ``ram_size`` bytes, mapped from :data:`VIRT_MEM` (the same interface as
    :class:`vmci.machine.x86_pc.RamSplit`: one piece)."""

    ram_size: int
    family: str = FAMILY
    block: str = RAM_BLOCK

    def __post_init__(self) -> None:
        if not 0 < self.ram_size <= RAM_LIMIT:
            raise UsageError(f"a virt machine has 1 byte to 255 GiB of RAM below the high region, not "
                             f"{self.ram_size:#x}")

    def ranges(self) -> list[tuple[int, int]]:
        """``(guest-physical start, size)`` of RAM."""
        return [(VIRT_MEM, self.ram_size)]

    def gpa(self, offset: int) -> int:
        """The guest-physical address of ``mach-virt.ram`` offset ``offset``."""
        return VIRT_MEM + offset

    def offset(self, gpa: int) -> int | None:
        """The ``mach-virt.ram`` offset of guest-physical ``gpa``, None when it is not RAM."""
        return gpa - VIRT_MEM if VIRT_MEM <= gpa < VIRT_MEM + self.ram_size else None


__all__ = ["FAMILY", "FLASH_BLOCKS", "FW_CFG_BASE", "FW_CFG_SIZE", "KERNEL_LOAD", "RAM_BLOCK", "VIRT_MEM",
           "VirtRam", "machine_family"]
