"""vmci's readers on real QEMU dumps: ELF, paging ELF and kdump-zlib from one stopped moment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmci.testing.qemu import SCENARIOS, RealGuest

pytestmark = pytest.mark.realworld

PAGE = 4096
KINDS = ["elf", "elf_paging", "kdump_zlib"]
WITH_NOTE_DEVICE = [name for name, sc in SCENARIOS.items() if sc.vmcoreinfo]
Opener = Callable[[RealGuest, str], Any]


@pytest.fixture(scope="module")
def open_real() -> Iterator[Opener]:
    """``open_real(guest, kind)``: the guest's dump of ``kind`` opened by vmci, cached and closed."""
    try:
        from vmci.formats import open_dump
    except ImportError as exc:
        pytest.skip(f"vmci.formats.open_dump is not importable yet: {exc}")
    opened: dict[Path, Any] = {}

    def get(guest: RealGuest, kind: str) -> Any:
        path = guest[kind]
        if path not in opened:
            opened[path] = open_dump(path)
        return opened[path]

    yield get
    for dump in opened.values():
        dump.close()


def sample_pages(guest: RealGuest) -> list[int]:
    """The note page, the first and last pages of every System RAM range, a few low pages
    and pages of the kernel image (never all zero)."""
    ram = []
    for lo, hi in guest.facts["system_ram"]:
        first, end = -(-lo // PAGE) * PAGE, hi // PAGE * PAGE
        if end > first:
            ram.append((first, end))
    pages = {guest.vmcoreinfo_paddr // PAGE * PAGE}
    for first, end in ram:
        pages |= {first, first + PAGE, end - 2 * PAGE, end - PAGE}
    pages |= {0x9E000, 0x100000, 0x200000, 0x1000000, 0x4000000}
    for what in ("Kernel code", "Kernel data"):
        for lo, hi in guest.guest.iomem(what):
            pages |= {lo // PAGE * PAGE, (lo + hi) // 2 // PAGE * PAGE}
    top_first, top_end = max(ram, key=lambda r: r[1])
    pages |= {top_end - k * PAGE for k in range(1, 9) if top_end - k * PAGE >= top_first}
    return sorted(p for p in pages if any(f <= p and p + PAGE <= e for f, e in ram))


@pytest.mark.parametrize("kind", KINDS)
def test_vmci_opens_each_real_format(with_device: RealGuest, open_real: Opener, kind: str) -> None:
    dump = open_real(with_device, kind)
    expected = "kdump" if kind == "kdump_zlib" else "elf"
    assert dump.format.split("-")[0] == expected
    # All of guest RAM is described (256 MiB less the firmware's reserved bits).
    ram = sum(hi - lo for lo, hi in with_device.facts["system_ram"])
    assert dump.memory.size >= ram


@pytest.mark.parametrize("scenario", WITH_NOTE_DEVICE, indirect=True)
@pytest.mark.parametrize("kind", KINDS)
def test_vmcoreinfo_note_matches_guest_ram(scenario: RealGuest, open_real: Opener, kind: str) -> None:
    dump = open_real(scenario, kind)
    notes = dump.notes_named("VMCOREINFO")
    assert len(notes) == 1
    assert notes[0].type == 0
    assert notes[0].desc == scenario.note_desc


@pytest.mark.parametrize("kind", ["elf", "elf_paging"])
def test_without_device_the_elf_has_no_vmcoreinfo_note(
    without_device: RealGuest, open_real: Opener, kind: str
) -> None:
    dump = open_real(without_device, kind)
    assert dump.notes_named("VMCOREINFO") == []
    assert len(dump.notes_named("CORE")) == without_device.facts["cpus"]


@pytest.mark.parametrize("scenario", list(SCENARIOS), indirect=True)
@pytest.mark.parametrize("kind", KINDS)
def test_note_bytes_read_at_the_reported_paddr(scenario: RealGuest, open_real: Opener, kind: str) -> None:
    # Also without the device: the note sits in RAM where /sys/kernel/vmcoreinfo says.
    dump = open_real(scenario, kind)
    assert dump.memory.read(scenario.vmcoreinfo_paddr, len(scenario.note)) == scenario.note


@pytest.mark.parametrize("scenario", ["with_device", "ovmf"], indirect=True)
def test_physical_pages_agree_across_formats(scenario: RealGuest, open_real: Opener) -> None:
    dumps = {kind: open_real(scenario, kind) for kind in KINDS}
    pages = sample_pages(scenario)
    assert len(pages) >= 10
    nonzero = paged = 0
    for paddr in pages:
        data = {kind: d.memory.read(paddr, PAGE) for kind, d in dumps.items() if kind != "elf_paging"}
        assert data["elf"] == data["kdump_zlib"], f"page {paddr:#x}: ELF vs kdump-zlib"
        # A paging dump's PT_LOADs describe virtual mappings; a page that no mapping backs
        # (QEMU clamps p_filesz at the end of a RAM block) is reported missing, never wrong.
        if dumps["elf_paging"].memory.readable(paddr, PAGE):
            assert dumps["elf_paging"].memory.read(paddr, PAGE) == data["elf"], f"page {paddr:#x}: paging ELF"
            paged += 1
        nonzero += any(data["elf"])
    assert nonzero >= 8  # the comparison is not of zero pages only
    assert paged >= len(pages) // 2


def test_reassembled_kdump_reads_like_the_flattened_one(
    with_device: RealGuest, reassembled_kdump: Path, open_real: Opener
) -> None:
    flat = open_real(with_device, "kdump_zlib")
    from vmci.formats import open_dump

    with open_dump(reassembled_kdump) as plain:
        assert plain.format == "kdump"
        assert [n.desc for n in plain.notes_named("VMCOREINFO")] == [with_device.note_desc]
        for paddr in sample_pages(with_device):
            assert plain.memory.read(paddr, PAGE) == flat.memory.read(paddr, PAGE), hex(paddr)


@pytest.mark.parametrize("scenario", list(SCENARIOS), indirect=True)
def test_each_cpu_has_a_page_table_root(scenario: RealGuest, open_real: Opener) -> None:
    roots = {}
    for kind in KINDS:
        cpus = open_real(scenario, kind).cpus
        assert len(cpus) == scenario.facts["cpus"], kind
        assert all(cpu.cr3 for cpu in cpus), kind
        roots[kind] = [cpu.cr3 for cpu in cpus]
    # One stopped moment: every format carries the same registers.
    assert roots["elf"] == roots["elf_paging"] == roots["kdump_zlib"]
