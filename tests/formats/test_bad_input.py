"""Bad input: a clear one-line error (or what can be read plus a warning), never a traceback."""

from __future__ import annotations

import functools
import itertools
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import FULL_UTSNAME, sample_memory, sample_notes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmci.errors import FormatError, TruncatedError, VmciError
from vmci.formats import open_dump
from vmci.formats.elf import write_elf
from vmci.formats.kdump import write_kdump
from vmci.formats.notes import find_desc


@functools.cache
def good_dumps() -> dict[str, bytes]:
    tmp = Path(tempfile.mkdtemp(prefix="vmci-good-"))
    mem = sample_memory(seed=3, size=0x400000)
    blob = sample_notes()
    out = {}
    for name in ("elf", "kdump", "flat"):
        p = tmp / name
        with p.open("wb") as f:
            if name == "elf":
                write_elf(f, mem, blob)
            else:
                write_kdump(
                    f,
                    mem,
                    blob,
                    flattened=name == "flat",
                    utsname=FULL_UTSNAME,
                    vmcoreinfo_span=find_desc(blob, "VMCOREINFO"),
                )
        out[name] = p.read_bytes()
        p.unlink()
    tmp.rmdir()
    return out


@pytest.fixture
def dumps() -> dict[str, bytes]:
    return good_dumps()


def exercise(path: Path) -> list[str]:
    """Open and read everything; return the warnings. Only VmciError may escape."""
    with open_dump(path) as d:
        budget = 64 << 20  # corrupt sizes can describe exabytes: read a bounded amount
        for r in d.memory.ranges:
            for a in range(r.start, min(r.end, r.start + budget), 1 << 20):
                d.memory.read(a, min(1 << 20, r.end - a), zero_fill=True)
        for _ in itertools.islice(d.memory.pages(), 20000):
            pass
        return list(d.warnings)


def boundaries(data: bytes, kind: str) -> list[int]:
    if kind == "elf":
        phoff = struct.unpack_from("<Q", data, 32)[0]
        return [
            0,
            3,
            4,
            20,
            63,
            64,
            phoff - 1,
            phoff + 10,
            phoff + 56,
            phoff + 64 * 2,
            phoff + 64 * 3 + 40,
            len(data) // 2,
            len(data) - 1,
        ]
    base = 4096 if kind == "flat" else 0
    return [
        0,
        7,
        8,
        100,
        400,
        463,
        464,
        4095,
        4096,
        4096 + 50,
        4096 + 104,
        8192,
        8192 + 100,
        12288,
        16384,
        20000,
        len(data) // 2,
        len(data) - 17,
        len(data) - 1,
    ] + [base + x for x in (0, 8, 16, 24)]


@pytest.mark.parametrize("kind", ["elf", "kdump", "flat"])
def test_truncated_at_every_header_boundary(tmp_path, dumps, kind):
    data = dumps[kind]
    for cut in sorted(set(b for b in boundaries(data, kind) if 0 <= b < len(data))):
        p = tmp_path / f"cut{cut}"
        p.write_bytes(data[:cut])
        try:
            warnings = exercise(p)
        except VmciError as e:
            assert "\n" not in str(e)
            assert isinstance(e, FormatError), f"cut at {cut}: {type(e).__name__} {e}"
        else:
            assert warnings, f"cut at {cut} of {len(data)} read without a warning"


def patch(data: bytes, off: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


@pytest.mark.parametrize(
    ("kind", "off", "fmt", "value", "field"),
    [
        ("elf", 0, "<I", 0x464C457E, "magic"),
        ("elf", 32, "<Q", 1 << 60, None),  # e_phoff beyond the file
        ("elf", 54, "<H", 40, "e_phentsize"),
        ("elf", 16, "<H", 2, "e_type"),
        ("kdump", 0, "<Q", 0x2020202050554442, "magic"),
        ("kdump", 428, "<i", 3000, "disk_dump_header"),  # block_size not a power of two
        ("kdump", 436, "<I", 1 << 30, None),  # bitmap_blocks beyond the file
        ("kdump", 432, "<i", 1 << 20, None),  # sub_hdr_size beyond the file
        ("kdump", 4096 + 96, "<Q", 1 << 40, "max_mapnr"),  # max_mapnr_64 beyond the bitmap
    ],
)
def test_impossible_fields_are_named(tmp_path, dumps, kind, off, fmt, value, field):
    p = tmp_path / "bad"
    p.write_bytes(patch(dumps[kind], off, fmt, value))
    try:
        warnings = exercise(p)
    except FormatError as e:
        if field:
            assert field in str(e), str(e)
        assert "offset" in str(e) or field is None
    else:
        assert field is None and warnings


def test_corrupt_page_descriptor_is_a_warning_not_a_crash(tmp_path, dumps):
    data = dumps["kdump"]
    # first descriptor after the header, sub-header+notes, and bitmaps; make its size huge
    sub_hdr_size, bitmap_blocks = struct.unpack_from("<iI", data, 432)
    desc = (1 + sub_hdr_size + bitmap_blocks) * 4096
    p = tmp_path / "baddesc"
    p.write_bytes(patch(patch(data, desc + 24 * 5 + 8, "<I", 99999), desc + 24 * 6, "<q", 1 << 50))
    warnings = exercise(p)
    assert any("exceeds the block size" in w for w in warnings)


def test_flattened_record_with_negative_size(tmp_path, dumps):
    p = tmp_path / "badflat"
    p.write_bytes(patch(dumps["flat"], 4096 + 8, ">q", -5))
    with pytest.raises(FormatError, match="impossible record"):
        open_dump(p)


@given(flips=st.lists(st.tuples(st.integers(0, 20000), st.integers(0, 255)), min_size=1, max_size=8))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.parametrize("kind", ["elf", "kdump", "flat"])
def test_random_corruption_never_escapes(tmp_path, kind, flips):
    b = bytearray(good_dumps()[kind])
    for off, val in flips:
        b[off % len(b)] = val
    p = tmp_path / "fuzz"
    p.write_bytes(bytes(b))
    try:
        exercise(p)
    except VmciError as e:
        assert "\n" not in str(e)


def test_cli_error_is_one_line_with_exit_code(tmp_path, dumps):
    p = tmp_path / "cut"
    p.write_bytes(dumps["kdump"][:300])
    r = subprocess.run([sys.executable, "-m", "vmci.cli", "info", str(p)], capture_output=True, text=True)
    assert r.returncode == TruncatedError.exit_code == 3
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vmci: error:"), r.stderr
    assert "Traceback" not in r.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "vmci.cli", "info", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 5 and "cannot open" in missing.stderr


def test_dump_is_never_modified(tmp_path, dumps):
    p = tmp_path / "ro"
    p.write_bytes(dumps["elf"])
    p.chmod(0o444)
    before = p.stat().st_mtime_ns
    exercise(p)
    assert p.read_bytes() == dumps["elf"] and p.stat().st_mtime_ns == before
