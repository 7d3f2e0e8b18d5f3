"""QEMU's pc/q35 RAM split, against the examples and thresholds QEMU's own sources state.

Oracles: the comment above the split in QEMU hw/i386/pc_piix.c ``pc_init1`` lists four
``qemu -M pc ...`` command lines with their low/high sizes; hw/i386/pc_q35.c ``pc_q35_init``
keeps RAM below 0xB0000000 low and otherwise puts 2 GiB low.  The expected values below are
those numbers, written out, not computed by the code under test.
"""

from __future__ import annotations

import pytest

from vmci.errors import UsageError
from vmci.machine import MACHINES, arch_of
from vmci.machine.x86_pc import (
    below_4g_size,
    bios_rom_start,
    gigabyte_align,
    is_bios_rom,
    machine_family,
    ram_split,
)

MIB = 1 << 20
GIB = 1 << 30


def test_pc_machine_and_below_4g_split() -> None:
    assert below_4g_size("q35", "pc-q35-7.2", 256 * MIB) == 256 * MIB
    assert below_4g_size("q35", "pc-q35-7.2", 0xAFFFF000) == 0xAFFFF000
    assert below_4g_size("q35", "pc-q35-7.2", 0xB0000000) == 0x80000000
    assert below_4g_size("q35", "pc-q35-2.4", 8 << 30) == 0x80000000
    assert below_4g_size("pc", "pc-i440fx-7.2", 0xDFFFF000) == 0xDFFFF000
    assert below_4g_size("pc", "pc-i440fx-7.2", 4 << 30) == 0xC0000000
    assert below_4g_size("pc", "pc-1.7", 4 << 30) == 0xE0000000


@pytest.mark.parametrize(
    ("machine", "ram", "max_below", "low", "high"),
    [
        ("pc-1.7", 4 * GIB, None, 3584 * MIB, 512 * MIB),  # "(old default)"
        ("pc", 4 * GIB, None, 3072 * MIB, 1024 * MIB),  # "(new default)"
        ("pc", 4 * GIB, 2 * GIB, 2048 * MIB, 2048 * MIB),  # "pc,max-ram-below-4g=2G"
        ("pc", 3968 * MIB, 4 * GIB, 3968 * MIB, 0),  # "pc,max-ram-below-4g=4G -m 3968M"
    ],
)
def test_pc_init1_examples(machine: str, ram: int, max_below: int | None, low: int, high: int) -> None:
    split = ram_split("pc", ram, machine=machine, max_ram_below_4g=max_below)
    assert (split.below_4g, split.above_4g) == (low, high)


def test_pc_split_only_when_ram_reaches_the_default_limit() -> None:
    # pc_init1 aligns to 3 GiB only when RAM does not fit below 0xE0000000 (3.5 GiB)
    assert below_4g_size("pc", "pc-i440fx-8.0", 3 * GIB) == 3 * GIB
    assert below_4g_size("pc", "pc-i440fx-8.0", 3584 * MIB - 4096) == 3584 * MIB - 4096
    assert below_4g_size("pc", "pc-i440fx-8.0", 3584 * MIB) == 3 * GIB
    assert below_4g_size("pc", "pc-i440fx-8.0", 64 * GIB) == 3 * GIB
    assert below_4g_size("pc", "pc-i440fx-1.7", 64 * GIB) == 3584 * MIB


def test_q35_split() -> None:
    assert below_4g_size("q35", "pc-q35-7.2", 2816 * MIB - 4096) == 2816 * MIB - 4096  # < 0xB0000000
    assert below_4g_size("q35", "pc-q35-7.2", 2816 * MIB) == 2 * GIB
    assert below_4g_size("q35", "q35", 3 * GIB) == 2 * GIB
    # the machine version does not matter on q35
    assert below_4g_size("q35", "pc-q35-1.7", 3 * GIB) == 2 * GIB
    # max-ram-below-4g caps (pc_q35_init: "min(qemu limit, user limit)")
    assert below_4g_size("q35", "pc-q35-7.2", 2 * GIB, max_ram_below_4g=1 * GIB) == 1 * GIB


def test_gigabyte_alignment_by_machine_type() -> None:
    types = ("pc", "pc-i440fx-2.0", "pc-i440fx-9.2", "pc-i440fx-1.7", "pc-1.3")
    assert [gigabyte_align(m) for m in types] == [True, True, True, False, False]


def test_machine_family_from_type_and_devices() -> None:
    assert machine_family("pc-q35-7.2") == ("q35", False)
    assert machine_family("q35") == ("q35", False)
    assert machine_family("pc-i440fx-7.2") == ("pc", False)
    assert machine_family("pc") == ("pc", False)
    assert machine_family("pc-1.3") == ("pc", False)
    assert machine_family("virt-7.2") == (None, False)
    assert machine_family(None, ["timer", "ICH9LPC", "cpu"]) == ("q35", True)
    assert machine_family(None, ["PIIX3", "cpu"]) == ("pc", True)
    assert machine_family(None, []) == (None, True)
    assert arch_of("q35") == arch_of("pc") == "x86_64" and arch_of(None) == arch_of("sbsa-ref") == "unknown"
    assert arch_of("virt") == "aarch64"
    assert set(MACHINES) == {"pc", "q35", "virt"}


def test_unknown_family_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="q35, pc"):
        below_4g_size("virt", None, GIB)


def test_ram_offsets_and_guest_physical_addresses() -> None:
    split = ram_split("pc", 4 * GIB)
    assert split.ranges() == [(0, 3 * GIB), (4 * GIB, 1 * GIB)]
    assert split.gpa(0) == 0 and split.gpa(3 * GIB - 1) == 3 * GIB - 1
    assert split.gpa(3 * GIB) == 4 * GIB and split.gpa(4 * GIB - 1) == 5 * GIB - 1
    assert split.offset(4 * GIB) == 3 * GIB and split.offset(5 * GIB - 1) == 4 * GIB - 1
    assert split.offset(3 * GIB) is None and split.offset(5 * GIB) is None  # PCI hole, past RAM
    assert ram_split("q35", 256 * MIB).ranges() == [(0, 256 * MIB)]


def test_bios_rom_ends_at_4_gib() -> None:
    assert bios_rom_start(0x40000) == 0xFFFC0000  # SeaBIOS' bios-256k.bin
    assert is_bios_rom(0xFFFC0000, 0x40000) and not is_bios_rom(0xFFFC0000, 0x20000)
    assert bios_rom_start(0) is None and bios_rom_start(32 * MIB) is None
