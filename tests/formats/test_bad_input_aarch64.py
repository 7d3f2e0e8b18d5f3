"""Bad input on arm64 layouts, as for x86 (test_bad_input.py): cut or scribbled QEMU arm64 ELF,
kdump and migration files, corrupt CPU notes and page tables, and tables built to be walked
forever give a clear one-line error or a warning, never a traceback or a hang."""

from __future__ import annotations

import contextlib
import functools
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmci.analysis.analyze import analyze
from vmci.analysis.kaslr import kaslr_for_dump, vmcoreinfo_for_kaslr
from vmci.errors import FormatError, UnsupportedError, VmciError
from vmci.formats import open_dump
from vmci.kernel.printk import get_printk_records
from vmci.kernel.vmem import KernelMemory
from vmci.machine.aarch64_virt import VIRT_MEM
from vmci.producer.config import Scenario
from vmci.producer.scenario import generate

#: the whole of one file's analysis may take this long, however it is corrupted
BOUND_SECONDS = 60


@functools.cache
def good(fmt: str) -> tuple[bytes, dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="vmci-a64-"))
    t = generate(Scenario(arch="aarch64", ram="16M", seed=12, pti=True), tmp / "d", fmt)
    return t.path.read_bytes(), t.data


def exercise(path: Path) -> None:
    """Open, analyze (discovery, checks, KASLR with the swapper scan) and read the kernel log
    through whatever was found; only VmciError may escape, in bounded time."""
    start = time.monotonic()
    try:
        with open_dump(path) as d:
            for r in d.memory.ranges:
                d.memory.read(r.start, min(r.size, 1 << 20), zero_fill=True)
            analyze(d, vmgenid=False)
            kaslr_for_dump(d, scan=True)
            vi, _ = vmcoreinfo_for_kaslr(d, scan=True)
            if vi is not None and d.arch == "aarch64":
                with contextlib.suppress(VmciError):  # no log in these guests: a clear error is fine
                    get_printk_records(KernelMemory.from_dump(d, vi))
    except VmciError as e:
        assert "\n" not in str(e), str(e)
    assert time.monotonic() - start < BOUND_SECONDS


def _elf_note_offset(data: bytes) -> tuple[int, int]:
    """(offset, size) of the PT_NOTE of an ELF64 little-endian core (QEMU 7.2 layout)."""
    phoff, phnum = struct.unpack_from("<Q", data, 32)[0], struct.unpack_from("<H", data, 56)[0]
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + 56 * i)
        if p_type == 4:
            return p_offset, p_filesz
    raise AssertionError("no PT_NOTE")


@pytest.mark.parametrize("fmt", ["elf", "kdump", "kdump-flat", "migration"])
def test_cut_anywhere(tmp_path: Path, fmt: str) -> None:
    data, _ = good(fmt)
    cuts = sorted({0, 4, 17, 63, 64, 200, 400, 800, 4095, 4096, 8192, 0x10000, 0x20000, len(data) // 3,
                   len(data) // 2, len(data) - 100, len(data) - 1} - {len(data)})
    for cut in cuts:
        p = tmp_path / f"cut{cut}"
        p.write_bytes(data[:cut])
        exercise(p)


@pytest.mark.parametrize(("desc_off", "value"), [(-20 + 4, 10_000), (-20 + 4, 100), (32, 0xFFFFFFFF),
                                                 (376, 0xFFFFFFFFFFFFFFFF)])
def test_corrupt_cpu_notes(tmp_path: Path, desc_off: int, value: int) -> None:
    """A PRSTATUS of the wrong size (descsz) costs a warning; absurd register values are data."""
    data, _ = good("elf")
    notes, _ = _elf_note_offset(data)
    b = bytearray(data)
    at = notes + 20 + desc_off
    if desc_off < 0:
        struct.pack_into("<I", b, at, value)
    else:
        struct.pack_into("<Q" if value > 0xFFFFFFFF else "<I", b, at, value)
    p = tmp_path / "bad.elf"
    p.write_bytes(bytes(b))
    exercise(p)
    with open_dump(p) as d:
        if desc_off < 0:
            assert d.cpus == [] or any("CPU" in w or "note" in w for w in d.warnings)


def test_32_bit_arm_kernel_memory_is_refused_clearly(tmp_path: Path) -> None:
    from vmci.core.memory import Range, SparseMemory
    from vmci.formats.elf import write_elf
    from vmci.layouts.elf import EM_ARM

    p = tmp_path / "arm.elf"
    with p.open("wb") as f:
        write_elf(f, SparseMemory([Range(0x80000000, 1 << 20)]), b"", machine=EM_ARM, bits=32)
    with open_dump(p) as d, pytest.raises(UnsupportedError, match="arm dumps are not supported"):
        KernelMemory.from_dump(d, None)


def test_tables_that_point_at_themselves_are_walked_in_bounded_time(tmp_path: Path) -> None:
    """swapper_pg_dir's entries and every table below pointing back at one table: 512**3 leaves
    described by three pages.  The search gives up within its leaf budget."""
    data, truth = good("elf")
    k = truth["kernel"]
    spd = k["pgd_paddr"]
    ram_off = struct.unpack_from("<Q", data, struct.unpack_from("<Q", data, 32)[0] + 56 + 8)[0]  # PT_LOAD
    b = bytearray(data)
    loop = spd + 0x1000 * 8  # some page inside the image, made into a table of tables
    loop_off = ram_off + loop - VIRT_MEM
    entry = loop | 0b11
    struct.pack_into("<512Q", b, loop_off, *([entry] * 512))
    for i in range(256, 512):  # the upper half of swapper_pg_dir: all into the loop
        struct.pack_into("<Q", b, ram_off + spd - VIRT_MEM + 8 * i, entry)
    p = tmp_path / "loop.elf"
    p.write_bytes(bytes(b))
    exercise(p)


@given(flips=st.lists(st.tuples(st.integers(0, 1 << 24), st.integers(0, 255)), min_size=1, max_size=12))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.parametrize("fmt", ["elf", "kdump", "migration"])
def test_random_corruption_never_escapes(tmp_path: Path, fmt: str, flips: list[tuple[int, int]]) -> None:
    data, truth = good(fmt)
    b = bytearray(data)
    hot = [0, 0x100]  # headers and notes, and for ELF the page tables' bytes
    if fmt == "elf":
        ram_off = struct.unpack_from("<Q", data, struct.unpack_from("<Q", data, 32)[0] + 56 + 8)[0]
        hot.append(ram_off + truth["kernel"]["pgd_paddr"] - VIRT_MEM)
    for n, (off, val) in enumerate(flips):
        b[(hot[n % len(hot)] + off % 0x2000) % len(b)] = val
    p = tmp_path / "fuzz"
    p.write_bytes(bytes(b))
    exercise(p)


def test_a_dump_with_the_wrong_architecture_is_a_format_error_or_a_warning(tmp_path: Path) -> None:
    """An x86_64 ELF header over arm64 notes: the 392-byte PRSTATUS is not x86's."""
    data, _ = good("elf")
    p = tmp_path / "x86.elf"
    p.write_bytes(data[:18] + struct.pack("<H", 62) + data[20:])
    with open_dump(p) as d:
        assert d.arch == "x86_64" and d.cpus == [] and any("CPU state notes" in w for w in d.warnings)
    exercise(p)
    with pytest.raises(FormatError):
        from vmci.arch.aarch64.cpu import parse_prstatus

        parse_prstatus(bytes(336))


def test_a_petabyte_segment_is_skipped_not_walked(tmp_path: Path) -> None:
    """A PT_LOAD whose p_memsz says 1 PiB (the file holds 16 MiB): every scan (ACPI, the note
    search, swapper_pg_dir) steps over the missing part at once."""
    data, _ = good("elf")
    phoff = struct.unpack_from("<Q", data, 32)[0]
    b = bytearray(data)
    struct.pack_into("<Q", b, phoff + 56 + 40, 1 << 50)  # the PT_LOAD's p_memsz
    p = tmp_path / "huge.elf"
    p.write_bytes(bytes(b))
    start = time.monotonic()
    exercise(p)
    assert time.monotonic() - start < 20
