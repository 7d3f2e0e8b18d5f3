"""Guest-physical RAM of an x86 QEMU machine (or an Arm ``virt`` one: :func:`virt_layout`), laid
out as QEMU's dump writer sees it.

QEMU dumps every RAM-backed ``GuestPhysBlock``: after SeaBIOS has programmed the PAM registers the
legacy areas (0xC0000-0xFFFFF, shadowed ROM and the F-segment) are RAM and merge with the low RAM
into one block ``[0, below_4g)``; RAM beyond the PCI hole sits from 4 GiB; SeaBIOS guests add
``pc.bios`` at 0xFFFC0000-0xFFFFFFFF (OVMF's flash is not RAM, so it is absent).  With
``vga_hole`` the 0xA0000-0xBFFFF window stays out, as when a VGA device claims it.

The split below 4 GiB is QEMU's, from :mod:`vmci.machine.x86_pc` (the one copy the migration
reader and writer use too): q35 keeps all RAM low up to 0xB0000000 and otherwise puts 2 GiB low;
pc (i440fx, current machine types) keeps RAM below 0xE0000000 low and otherwise puts 3 GiB low.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from vmci.core.memory import PAGE_SIZE, Range, SparseMemory
from vmci.errors import UsageError
from vmci.machine.aarch64_virt import VirtRam
from vmci.machine.x86_pc import FAMILIES, below_4g_size

FOUR_GIB = 1 << 32
LOW_RAM_END = 0xA0000  # conventional memory ends where the VGA window starts
VGA_END = 0xC0000
BIOS_AREA = 0xE0000  # E/F segments: the isa-bios alias of the last 128 KiB of pc.bios
BIOS_ROM_BASE = 0xFFFC0000
BIOS_ROM_SIZE = 0x40000
MACHINES = FAMILIES


@dataclass(frozen=True)
class GuestLayout:
    """Where RAM is; ``ranges`` is what the dump describes (RAM plus the BIOS ROM block)."""

    machine: str
    ram_size: int
    below_4g: int
    above_4g: int
    bios_rom: Range | None
    vga_hole: bool
    ranges: tuple[Range, ...] = field(default=())

    @property
    def low_top(self) -> int:
        """End of RAM below 4 GiB: where SeaBIOS' ZoneHigh and OVMF's allocations start."""
        return self.below_4g

    def ram_ranges(self) -> list[Range]:
        """RAM only (no ROM), the ranges the guest kernel may use."""
        return [r for r in self.ranges if self.bios_rom is None or r != self.bios_rom]

    def to_dict(self) -> dict[str, object]:
        return {
            "machine": self.machine, "ram_size": self.ram_size, "below_4g": self.below_4g,
            "above_4g": self.above_4g, "vga_hole": self.vga_hole,
            "bios_rom": [self.bios_rom.start, self.bios_rom.size] if self.bios_rom else None,
            "ranges": [[r.start, r.size] for r in self.ranges],
        }


def split_ram(ram_size: int, machine: str = "q35") -> tuple[int, int]:
    """(bytes below 4 GiB, bytes above) as QEMU's pc/q35 machines split guest RAM."""
    if machine not in MACHINES:
        raise UsageError(f"machine is one of {', '.join(MACHINES)}, not {machine!r}")
    low = below_4g_size(machine, None, ram_size)  # the newest machine type of the family
    return low, ram_size - low


def guest_layout(ram_size: int, *, machine: str = "q35", firmware: str = "seabios",
                 vga_hole: bool = False) -> GuestLayout:
    """The layout of a guest with ``ram_size`` bytes of RAM (a multiple of 1 MiB, at least 2 MiB)."""
    if ram_size < (2 << 20) or ram_size % (1 << 20):
        raise UsageError(f"guest RAM must be a multiple of 1 MiB and at least 2 MiB, not {ram_size:#x}")
    low, high = split_ram(ram_size, machine)
    ranges = [Range(0, LOW_RAM_END), Range(VGA_END, low - VGA_END)] if vga_hole else [Range(0, low)]
    if high:
        ranges.append(Range(FOUR_GIB, high))
    rom = Range(BIOS_ROM_BASE, BIOS_ROM_SIZE) if firmware == "seabios" else None
    if rom is not None:
        ranges.append(rom)
    return GuestLayout(machine, ram_size, low, high, rom, vga_hole, tuple(sorted(ranges)))


def virt_layout(ram_size: int) -> GuestLayout:
    """An Arm ``virt`` guest: ``ram_size`` bytes (a multiple of 1 MiB, at least 2 MiB) from 1 GiB
    (:mod:`vmci.machine.aarch64_virt`), no ROM in the dump (the flash is not RAM)."""
    if ram_size < (2 << 20) or ram_size % (1 << 20):
        raise UsageError(f"guest RAM must be a multiple of 1 MiB and at least 2 MiB, not {ram_size:#x}")
    virt = VirtRam(ram_size)
    ranges = tuple(Range(start, size) for start, size in virt.ranges())
    return GuestLayout(virt.family, ram_size, ram_size, 0, None, False, ranges)


def bios_image(seed: int = 0) -> dict[int, bytes]:
    """A few recognisable bytes of a 256 KiB SeaBIOS-like ROM, by offset: the rest is zeros
    (sparse).  The reset vector at the top jumps to F000:E05B, like every PC BIOS."""
    tag = hashlib.sha256(f"vmci-seabios-{seed}".encode()).digest()[:8]
    return {
        0x20000: b"SeaBIOS (vmci synthetic) " + tag.hex().encode() + b"\0",
        BIOS_ROM_SIZE - 0x10: b"\xea\x5b\xe0\x00\xf0" + b"06/23/99\0" + b"\xfc\x00",
    }


def build_memory(layout: GuestLayout, *, seed: int = 0) -> SparseMemory:
    """Guest RAM as a :class:`SparseMemory`, with the BIOS ROM and its F-segment alias filled."""
    mem = SparseMemory(layout.ranges, page_size=PAGE_SIZE)
    if layout.bios_rom is not None:
        alias = BIOS_AREA - (BIOS_ROM_SIZE - 0x20000)  # isa-bios maps the ROM's last 128 KiB
        for off, data in bios_image(seed).items():
            mem.write(layout.bios_rom.start + off, data)
            if off >= BIOS_ROM_SIZE - 0x20000:
                mem.write(alias + off, data)
    return mem

