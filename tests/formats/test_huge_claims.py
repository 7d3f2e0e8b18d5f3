"""Issue 13: a small file claiming enormous memory (a corrupt ELF ``p_memsz``/``p_filesz``, kdump
``max_mapnr``/bitmap sizes, flattened record sizes and offsets, a migration RAMBlock length, a
libvirt save image's ``data_len`` or the RAMBlock length of the stream it wraps, raw or compressed)
finishes ``info``, ``analyze`` and ``kaslr`` in under 2 s each, with a clear error or a warning:
the work is bounded by the bytes the file holds, never by what a header says."""

from __future__ import annotations

import gzip
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vmci.cli import app
from vmci.core.memory import Range, SparseMemory
from vmci.formats.libvirt import write_libvirt
from vmci.formats.migration.writer import write_migration
from vmci.producer.scenario import Scenario, generate

PIB4 = 0xF_FFFF_FFFF_F000  # ~4 PiB: the p_memsz the fuzzing run found hanging the RSDP search
LIMIT = 2.0


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("huge")
    out = {}
    # note-less OVMF guests: every strategy runs, the memory scan and the RSDP search in all RAM
    # included (an OVMF RSDP is not in the F-segment)
    scenario = Scenario(seed=3, ram=32 << 20, firmware="ovmf", vmgenid=True, faults=("vmcoreinfo-lost",))
    for fmt in ("elf", "kdump", "kdump-flat"):
        generate(scenario, d / f"g.{fmt}", fmt)
        out[fmt] = d / f"g.{fmt}"
    mem = SparseMemory([Range(0, 32 << 20)])
    mem.write(0x100000, b"\x55" * 4096)
    with (d / "g.mig").open("wb") as f:
        write_migration(f, mem)
    out["migration"] = d / "g.mig"
    for compression in ("raw", "gzip"):
        with out["migration"].open("rb") as stream, (d / f"g.{compression}.save").open("wb") as f:
            write_libvirt(f, stream, xml="<domain/>", compression=compression)
        out[f"libvirt-{compression}"] = d / f"g.{compression}.save"
    return out


def elf_loads(raw: bytearray, fn: Callable[[bytearray, int], None]) -> None:
    phoff, = struct.unpack_from("<Q", raw, 32)
    phnum, = struct.unpack_from("<H", raw, 56)
    for i in range(phnum):
        if struct.unpack_from("<I", raw, phoff + 56 * i)[0] == 1:
            fn(raw, phoff + 56 * i)


def elf_memsz(raw: bytearray) -> None:
    elf_loads(raw, lambda r, at: struct.pack_into("<Q", r, at + 40, PIB4))


def elf_filesz(raw: bytearray) -> None:
    elf_loads(raw, lambda r, at: struct.pack_into("<QQ", r, at + 32, 1 << 60, 1 << 60))


def elf_paddr(raw: bytearray) -> None:
    elf_loads(raw, lambda r, at: struct.pack_into("<Q", r, at + 24, (1 << 52) - 0x1000))


def kdump_max_mapnr(raw: bytearray) -> None:
    struct.pack_into("<I", raw, 440, 0xFFFFFFFF)  # header max_mapnr
    struct.pack_into("<Q", raw, 4096 + 0x50, 1 << 60)  # sub-header max_mapnr_64 (v6, LP64)


def kdump_bitmap_blocks(raw: bytearray) -> None:
    struct.pack_into("<I", raw, 436, 0x7FFFFFFF)


def kdump_descriptors(raw: bytearray) -> None:
    """Every page descriptor claims the largest block, far past the end of the file."""
    sub_hdr_size, bitmap_blocks = struct.unpack_from("<iI", raw, 432)
    desc = (1 + sub_hdr_size + bitmap_blocks) * 4096
    for at in range(desc, len(raw) - 24, 24):
        struct.pack_into("<qI", raw, at, 1 << 62, 0xFFFFFFFF)


def flat_record_size(raw: bytearray) -> None:
    struct.pack_into(">q", raw, 4096 + 8, 1 << 60)  # the first record's size


def flat_record_offset(raw: bytearray) -> None:
    """A late record is moved to 1 PiB: the rearranged file claims to be that large."""
    pos, last = 4096, 4096
    while pos + 16 <= len(raw):
        off, n = struct.unpack_from(">qq", raw, pos)
        if off == -1:
            break
        if off:  # not the kdump header's record
            last = pos
        pos += 16 + n
    struct.pack_into(">q", raw, last, 1 << 50)


def flat_offset_and_bitmap(raw: bytearray) -> None:
    """The rearranged file claims 1 PiB and the kdump header 8 TiB of bitmaps that fit in it."""
    pos = 4096
    while pos + 16 <= len(raw):
        off, n = struct.unpack_from(">qq", raw, pos)
        if off == 0:  # the record holding the kdump header: bitmap_blocks at 436
            struct.pack_into("<I", raw, pos + 16 + 436, 0x7FFFFFFF)
            break
        pos += 16 + n
    flat_record_offset(raw)


def migration_block_length(raw: bytearray) -> None:
    at = raw.index(b"\x06pc.ram")
    old, = struct.unpack_from(">Q", raw, at + 7)
    struct.pack_into(">Q", raw, at + 7, 1 << 50)
    total, = struct.unpack_from(">Q", raw, at - 8)
    struct.pack_into(">Q", raw, at - 8, (total & ~0xFFF) - old + (1 << 50) | (total & 0xFFF))


LIBVIRT_HEADER = 92


def libvirt_data_len(raw: bytearray) -> None:
    struct.pack_into("<I", raw, 20, 0xFFFFFFF0)  # virQEMUSaveHeader.data_len: 4 GiB of XML


def libvirt_stream(raw: bytearray, patch: Callable[[bytearray], None]) -> None:
    """Patch the migration stream inside a save image (recompressed when it is gzip'd)."""
    data_len, _, fmt = struct.unpack_from("<III", raw, 20)
    start = LIBVIRT_HEADER + data_len
    stream = bytearray(raw[start:] if fmt == 0 else gzip.decompress(bytes(raw[start:])))
    patch(stream)
    raw[start:] = stream if fmt == 0 else gzip.compress(bytes(stream))


CASES = {
    "elf-p_memsz": ("elf", elf_memsz),
    "elf-p_filesz": ("elf", elf_filesz),
    "elf-p_paddr": ("elf", elf_paddr),
    "kdump-max_mapnr": ("kdump", kdump_max_mapnr),
    "kdump-bitmap_blocks": ("kdump", kdump_bitmap_blocks),
    "kdump-page_desc": ("kdump", kdump_descriptors),
    "flattened-record-size": ("kdump-flat", flat_record_size),
    "flattened-record-offset": ("kdump-flat", flat_record_offset),
    "flattened-offset-and-bitmap": ("kdump-flat", flat_offset_and_bitmap),
    "migration-ramblock-length": ("migration", migration_block_length),
    "libvirt-data_len": ("libvirt-raw", libvirt_data_len),
    "libvirt-ramblock-length": ("libvirt-raw", lambda r: libvirt_stream(r, migration_block_length)),
    "libvirt-gzip-ramblock-length": ("libvirt-gzip", lambda r: libvirt_stream(r, migration_block_length)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["info", "analyze", "kaslr"])
def test_small_file_claiming_enormous_memory(dumps: dict[str, Path], tmp_path: Path, case: str,
                                             command: str) -> None:
    fmt, patch = CASES[case]
    raw = bytearray(dumps[fmt].read_bytes())
    patch(raw)
    path = tmp_path / f"{case}.{fmt}"
    path.write_bytes(raw)
    args = [command, str(path)] + (["--json"] if command != "info" else [])
    t = time.perf_counter()
    res = CliRunner().invoke(app, args)
    elapsed = time.perf_counter() - t
    assert elapsed < LIMIT, f"{command} on {case}: {elapsed:.2f} s"
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    said = res.output.lower()
    if res.exit_code == 3:  # refused: the message names the field
        assert "error" in said, said
    else:  # read: the claim is reported
        assert any(w in said for w in ("warning", "truncat", "beyond", "clipped", "past the end",
                                       "not in the stream", "exceeds", "impossible")), said[:2000]
    assert path.read_bytes() == raw  # never modified
