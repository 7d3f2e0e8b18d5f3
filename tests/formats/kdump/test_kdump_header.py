"""kdump header parsing against headers packed by hand from makedumpfile's ``diskdump_mod.h``
(``struct disk_dump_header``, ``struct kdump_sub_header``), not from vmci's declarations."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from vmci.errors import FormatError
from vmci.formats.kdump.header import read_info
from vmci.formats.source import FileSource
from vmci.layouts import field_names
from vmci.layouts.kdump import ABIS, SUB_HEADER_SINCE, KdumpStatus, kdump_layout, status_labels

BS = 4096
UTS = [b"Linux", b"guest", b"6.1.0", b"#1 SMP", b"x86_64", b"(none)"]


def disk_dump_header(order: str, *, lp64: bool, version: int, status: int, max_mapnr: int,
                     machine: bytes = b"x86_64", nr_cpus: int = 2) -> bytes:
    uts = b"".join(f.ljust(65, b"\0") for f in [*UTS[:4], machine, UTS[5]])
    long = "q" if lp64 else "i"
    pad = 6 if lp64 else 2  # struct timeval aligned to its long
    return struct.pack(
        f"{order}8si390s{pad}x{long}{long}IiiIIIIIIi",
        b"KDUMP   ", version, uts, 1700000000, 123456, status, BS, 1, 2, max_mapnr, 0, 0, 0, 1, nr_cpus,
    )


def kdump_sub_header(order: str, *, lp64: bool, split: tuple[int, int] | None = None) -> bytes:
    lng = "Q" if lp64 else "I"
    start, end = split or (0, 0)
    # i386 packs the off_t after the 32-bit longs ("32pack")
    return struct.pack(
        f"{order}{lng}ii{lng}{lng}q{lng}q{lng}q{lng}QQQ",
        0xFFFFFFFFEB600000 if lp64 else 0xFFE00000, 31, 1 if split else 0, start, end,
        BS + 200, 300, BS + 104, 1000, 0, 0, start, end, 16,
    )


def hand_made(tmp_path: Path, version: int, order: str = "<", lp64: bool = True, **kw: object) -> Path:
    status = KdumpStatus.COMPRESSED_ZSTD | KdumpStatus.COMPRESSED_INCOMPLETE
    head = disk_dump_header(order, lp64=lp64, version=version, status=status, max_mapnr=16,
                            machine=b"x86_64" if lp64 else b"i686")
    sub = kdump_sub_header(order, lp64=lp64, **kw)  # type: ignore[arg-type]
    data = head.ljust(BS, b"\0") + sub.ljust(BS, b"\0") + b"\xff\xff".ljust(BS, b"\0") * 2
    path = tmp_path / f"v{version}"
    path.write_bytes(data)
    return path


def info_of(path: Path):  # type: ignore[no-untyped-def]
    src = FileSource(path)
    try:
        return read_info(src)
    finally:
        src.close()


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("lp64", [True, False])
def test_v6_header_fields(tmp_path: Path, order: str, lp64: bool) -> None:
    info = info_of(hand_made(tmp_path, 6, order, lp64))
    h = info.header
    assert (h.abi, h.byte_order) == ("lp64" if lp64 else "i386", "little" if order == "<" else "big")
    assert h.header_version == 6 and h.signature == "KDUMP   " and h.block_size == BS
    assert h.utsname.release == "6.1.0" and h.utsname.machine == ("x86_64" if lp64 else "i686")
    assert (h.tv_sec, h.tv_usec, h.nr_cpus, h.current_cpu) == (1700000000, 123456, 2, 1)
    assert h.status == 0x28 and h.status_flags == ("incomplete", "zstd") and h.compression == "zstd"
    assert (h.sub_hdr_size, h.bitmap_blocks, h.max_mapnr) == (1, 2, 16)
    assert h.phys_base == (0xFFFFFFFFEB600000 if lp64 else 0xFFE00000)
    assert h.phys_base_signed == (-346030080 if lp64 else -0x200000)
    assert (h.dump_level, h.split, h.start_pfn, h.end_pfn) == (31, 0, 0, 16)
    assert (h.offset_vmcoreinfo, h.size_vmcoreinfo) == (BS + 200, 300)
    assert (h.offset_note, h.size_note) == (BS + 104, 1000)
    assert (h.offset_eraseinfo, h.size_eraseinfo) == (0, 0)
    assert info.desc_offset == 4 * BS and info.two_bitmaps
    assert any("incomplete" in w for w in info.warnings)


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4, 5])
def test_fields_beyond_the_version_are_absent(tmp_path: Path, version: int) -> None:
    """The bytes are there (the sub-header has a fixed size); the version says they mean nothing."""
    h = info_of(hand_made(tmp_path, version)).header
    since = {"phys_base": 1, "dump_level": 1, "split": 2, "offset_vmcoreinfo": 3, "offset_note": 4,
             "offset_eraseinfo": 5}
    for name, v in since.items():
        assert (getattr(h, name) is not None) == (version >= v), name
    if version >= 3:
        assert h.offset_vmcoreinfo == BS + 200


def test_split_range_from_the_32_or_64_bit_fields(tmp_path: Path) -> None:
    h6 = info_of(hand_made(tmp_path, 6, split=(4, 12))).header
    assert (h6.split, h6.start_pfn, h6.end_pfn) == (1, 4, 12)
    h5 = info_of(hand_made(tmp_path, 5, split=(2, 9))).header
    assert (h5.split, h5.start_pfn, h5.end_pfn) == (1, 2, 9)


def test_impossible_header_is_refused(tmp_path: Path) -> None:
    path = hand_made(tmp_path, 6)
    data = bytearray(path.read_bytes())
    struct.pack_into("<i", data, 428, 3000)  # block_size not a power of two, in either byte order
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="impossible values"):
        info_of(path)


@pytest.mark.parametrize("abi", ABIS)
def test_version_gates_cover_every_sub_header_field(abi: str) -> None:
    assert list(SUB_HEADER_SINCE) == field_names(kdump_layout(abi).sub_header)


def test_status_flags_as_makedumpfile_names_them() -> None:
    # diskdump_mod.h: DUMP_DH_COMPRESSED_ZLIB 0x1 ... DUMP_DH_COMPRESSED_ZSTD 0x20
    assert status_labels(0x3F) == ("zlib", "lzo", "snappy", "incomplete", "excluded-vmemmap", "zstd")
    assert status_labels(0x40) == ()
