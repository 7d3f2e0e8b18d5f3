"""A ``pc`` guest with 4 GiB of RAM: the producer lays it out, the migration writer writes it, the
reader maps it back, and all three agree with QEMU's split.

Expected map, from QEMU hw/i386/pc_piix.c ``pc_init1`` (its comment: ``qemu -M pc -m 4G (new
default) -> 3072M low, 1024M high``) and hw/i386/x86.c ``x86_bios_rom_init`` (the 256 KiB SeaBIOS
ROM ends at 4 GiB).  The first-wave producer put 3.5 GiB low (the pre-2.0 rule) and the writer
refused the guest.
"""

from __future__ import annotations

from pathlib import Path

from vmci.core.memory import Range
from vmci.formats import open_dump
from vmci.formats.migration.writer import write_migration
from vmci.producer.guest import build_memory, guest_layout

GIB = 1 << 30
PS = 4096
PC_4G_RAM = [(0, 3 * GIB), (4 * GIB, 1 * GIB)]  # 3072M low, 1024M high
SEABIOS_ROM = (0xFFFC0000, 0x40000)
MARKS = {  # guest-physical address -> bytes the guest wrote there
    0x1000: b"low RAM",
    3 * GIB - PS: b"last page below the PCI hole",
    4 * GIB: b"first page above 4 GiB",
    5 * GIB - 16: b"top of RAM",
}


def test_pc_guest_with_4_gib_round_trips(tmp_path: Path) -> None:
    layout = guest_layout(4 * GIB, machine="pc")
    assert (layout.below_4g, layout.above_4g) == (3 * GIB, 1 * GIB)
    assert [(r.start, r.size) for r in layout.ram_ranges()] == PC_4G_RAM
    mem = build_memory(layout, seed=4)
    for addr, data in MARKS.items():
        mem.write(addr, data)
    path = tmp_path / "pc4g.qevm"
    with path.open("wb") as f:
        write_migration(f, mem, machine="pc-i440fx-7.2")
    with open_dump(path) as d:
        assert d.saved_state is not None
        header = d.saved_state.migration
        assert (header.machine, header.machine_family, header.below_4g) == ("pc-i440fx-7.2", "pc", 3 * GIB)
        assert d.arch == "x86_64" and not d.warnings
        # the producer's map and the reader's map are both QEMU's
        assert [(r.start, r.size) for r in d.memory.ranges] == sorted([*PC_4G_RAM, SEABIOS_ROM])
        assert list(d.memory.ranges) == list(layout.ranges)
        ram = {b.name: b for b in header.ram_blocks}["pc.ram"]
        assert (ram.size, ram.gpa) == (4 * GIB, tuple(PC_4G_RAM))
        for addr, data in MARKS.items():
            assert d.memory.read(addr, len(data)) == data, hex(addr)
        assert d.memory.read(*SEABIOS_ROM) == mem.read(*SEABIOS_ROM)
        assert not d.memory.contains(3 * GIB, PS)  # the PCI hole is no RAM
        assert d.memory.contains(Range(4 * GIB, GIB).start, GIB)
