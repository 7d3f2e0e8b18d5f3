"""QEMU's x86 ``pc`` (i440fx) and ``q35`` machines: where guest RAM sits in guest-physical space.

QEMU allocates guest RAM as one RAMBlock, ``pc.ram``, and maps it in at most two pieces: offsets
``[0, below_4g)`` at the same guest-physical addresses, the rest from 4 GiB, above the PCI hole.
The size below 4 GiB (``below_4g_mem_size``) is set once, when the machine is built:

- ``pc`` (QEMU hw/i386/pc_piix.c, ``pc_init1``): ``lowmem`` is the machine property
  ``max-ram-below-4g``, 0xE0000000 (3.5 GiB) by default.  When RAM reaches ``max-ram-below-4g``
  and the machine type aligns RAM to gigabytes, ``lowmem`` drops to at most 0xC0000000 (3 GiB).
  Every machine type after 1.7 aligns; ``pc-i440fx-1.7`` and older do not
  (``pc_i440fx_1_7_machine_options`` clears ``gigabyte_align``, for live-migration
  compatibility).  So ``qemu -M pc -m 4G`` has 3 GiB low and 1 GiB high, ``-M pc-1.7 -m 4G`` 3.5 GiB
  low and 512 MiB high.
- ``q35`` (QEMU hw/i386/pc_q35.c, ``pc_q35_init``): ``lowmem`` is 0x80000000 (2 GiB) when RAM
  reaches 0xB0000000, else 0xB0000000 (leaving room for the PCI window and MMCONFIG), then
  capped by ``max-ram-below-4g`` (default 4 GiB: no cap).  The machine version does not matter.

Both then take ``below_4g = min(RAM, lowmem)`` and put the rest above 4 GiB.  The firmware ROM is
a RAMBlock of its own, ``pc.bios``, mapped so that it ends at 4 GiB (QEMU hw/i386/x86.c,
``x86_bios_rom_init``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vmci.errors import UsageError

FOUR_GIB = 1 << 32
GIB = 1 << 30
PC_LOWMEM = 0xE0000000  # pc_init1: the default max-ram-below-4g (3.5 GiB)
PC_LOWMEM_ALIGNED = 0xC0000000  # pc_init1: the gigabyte-aligned split (3 GiB)
Q35_LOWMEM = 0xB0000000  # pc_q35_init: less RAM than this stays below 4 GiB
Q35_LOWMEM_SPLIT = 0x80000000  # pc_q35_init: otherwise 2 GiB below 4 GiB
FAMILIES = ("q35", "pc")
RAM_BLOCK = "pc.ram"
BIOS_BLOCK = "pc.bios"
BIOS_MAX_SIZE = 16 << 20  # a bound for a plausible firmware ROM (SeaBIOS: 256 KiB, OVMF: 2-4 MiB)
#: machine types without the gigabyte alignment (``gigabyte_align = false``): up to 1.7
LAST_UNALIGNED_VERSION = (1, 7)

# devices whose names in a stream's VM description give the family away (no machine type)
_Q35_DEVICES = ("ICH9LPC", "/mch")
_PC_DEVICES = ("PIIX", "i440FX")


def machine_version(machine: str | None) -> tuple[int, int] | None:
    """``(major, minor)`` of a versioned machine type (``pc-q35-7.2`` -> (7, 2)); None for aliases."""
    m = re.search(r"(\d+)\.(\d+)", machine or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def machine_family(machine: str | None, device_names: Iterable[str] = ()) -> tuple[str | None, bool]:
    """``("q35" | "pc" | None, guessed)`` from the machine type (``pc-q35-*``, ``q35``,
    ``pc-i440fx-*``, ``pc``, the old ``pc-X.Y`` names); without one, guessed from the names of
    the machine's devices (ICH9 LPC / MCH: q35; PIIX / i440FX: pc)."""
    if machine:
        if machine.startswith("pc-q35") or machine == "q35":
            return "q35", False
        if machine.startswith("pc-i440fx") or machine == "pc" or re.fullmatch(r"pc-\d+\.\d+", machine):
            return "pc", False
        return None, False
    names = " ".join(device_names)
    if any(d in names for d in _Q35_DEVICES):
        return "q35", True
    if any(d in names for d in _PC_DEVICES):
        return "pc", True
    return None, True


def gigabyte_align(machine: str | None) -> bool:
    """Does a ``pc`` machine of type ``machine`` align the RAM split to gigabytes?  (Unversioned
    names, ``pc`` itself, are the newest type: yes.)"""
    version = machine_version(machine)
    return version is None or version > LAST_UNALIGNED_VERSION


def below_4g_size(family: str, machine: str | None, ram_size: int, *,
                  max_ram_below_4g: int | None = None) -> int:
    """How many bytes of ``pc.ram`` QEMU maps below 4 GiB (``below_4g_mem_size``) for a machine
    of ``family`` and type ``machine`` with ``ram_size`` bytes of RAM; ``max_ram_below_4g`` is
    the machine property of that name (None: QEMU's default)."""
    if family == "q35":
        lowmem = Q35_LOWMEM_SPLIT if ram_size >= Q35_LOWMEM else Q35_LOWMEM
        if max_ram_below_4g is not None:
            lowmem = min(lowmem, max_ram_below_4g)
    elif family == "pc":
        limit = PC_LOWMEM if max_ram_below_4g is None else max_ram_below_4g
        lowmem = limit
        if ram_size >= limit and gigabyte_align(machine):
            lowmem = min(lowmem, PC_LOWMEM_ALIGNED)
    else:
        raise UsageError(f"machine family is one of {', '.join(FAMILIES)}, not {family!r}")
    return min(ram_size, lowmem)


@dataclass(frozen=True)
class RamSplit:
    """``pc.ram`` of ``ram_size`` bytes: ``below_4g`` bytes from 0, the rest from 4 GiB."""

    family: str
    ram_size: int
    below_4g: int

    @property
    def above_4g(self) -> int:
        return self.ram_size - self.below_4g

    def ranges(self) -> list[tuple[int, int]]:
        """``(guest-physical start, size)`` of each piece of ``pc.ram``, low first."""
        low = [(0, self.below_4g)] if self.below_4g else []
        return low + ([(FOUR_GIB, self.above_4g)] if self.above_4g else [])

    def gpa(self, offset: int) -> int:
        """The guest-physical address of ``pc.ram`` offset ``offset``."""
        return offset if offset < self.below_4g else FOUR_GIB + offset - self.below_4g

    def offset(self, gpa: int) -> int | None:
        """The ``pc.ram`` offset of guest-physical ``gpa``, None when it is not RAM."""
        if 0 <= gpa < self.below_4g:
            return gpa
        if FOUR_GIB <= gpa < FOUR_GIB + self.above_4g:
            return gpa - FOUR_GIB + self.below_4g
        return None


def ram_split(family: str, ram_size: int, *, machine: str | None = None,
              max_ram_below_4g: int | None = None) -> RamSplit:
    """The :class:`RamSplit` of a ``family`` machine (type ``machine``) with ``ram_size`` bytes."""
    below = below_4g_size(family, machine, ram_size, max_ram_below_4g=max_ram_below_4g)
    return RamSplit(family, ram_size, below)


def bios_rom_start(size: int) -> int | None:
    """Where a ``pc.bios`` RAMBlock of ``size`` bytes is mapped (ending at 4 GiB); None for a
    size no firmware ROM has."""
    return FOUR_GIB - size if 0 < size <= BIOS_MAX_SIZE else None


def is_bios_rom(start: int, size: int) -> bool:
    """Is ``[start, start + size)`` where QEMU maps the firmware ROM (not RAM)?"""
    return bios_rom_start(size) == start
