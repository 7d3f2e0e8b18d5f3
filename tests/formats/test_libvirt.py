"""libvirt save images: header, XML, raw and compressed streams (read through a temporary file)."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
from pathlib import Path

import cramjam
import pytest

from vmci.core.memory import Range, SparseMemory
from vmci.errors import FormatError, TruncatedError, UnsupportedError
from vmci.formats import open_dump
from vmci.formats.libvirt import write_libvirt
from vmci.formats.migration.writer import VmcoreinfoRecord, standard_devices, write_migration
from vmci.layouts.migration import libvirt_header

MIB = 1 << 20
XML = "<domain type='kvm'><name>guest</name></domain>"


@pytest.fixture(scope="module")
def guest_stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[SparseMemory, Path]:
    mem = SparseMemory([Range(0, 2 * MIB)])
    mem.write(0x10000, os.urandom(300_000))
    path = tmp_path_factory.mktemp("stream") / "s.qevm"
    devices = standard_devices(vmcoreinfo_record=VmcoreinfoRecord(0, 1, 4132, 0x1F000), vmgenid_addr=0x1E028)
    with path.open("wb") as f:
        write_migration(f, mem, devices=devices, stale={0x10000: b"\x55" * 4096})
    return mem, path


def save_image(stream: Path, out: Path, **kw: object) -> Path:
    with stream.open("rb") as s, out.open("wb") as o:
        write_libvirt(o, s, xml=XML, **kw)  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("compression", ["raw", "gzip", "bzip2", "xz", "zstd"])
def test_save_image_round_trip(
    guest_stream: tuple[SparseMemory, Path], tmp_path: Path, compression: str
) -> None:
    mem, stream = guest_stream
    p = save_image(stream, tmp_path / "guest.save", compression=compression, cookie="<cookie/>")
    raw = p.read_bytes()
    assert raw[:16] == b"LibvirtQemudSave" and raw[0x5C:0x60] == b"<dom"
    with open_dump(p) as d:
        assert d.format == "libvirt-save"
        assert d.facts["domain_xml"] == XML and d.facts["cookie_xml"] == "<cookie/>"
        assert d.facts["compression"] == compression and d.facts["was_running"] is True
        assert d.memory.read(0, 2 * MIB) == mem.read(0, 2 * MIB)
        assert d.facts["devices"]["vmcoreinfo"]["paddr"] == 0x1F000
        assert d.saved_state is not None and d.saved_state.libvirt is not None
        assert d.saved_state.devices.vmgenid_addr_blob == struct.pack("<Q", 0x1E028)
        temp = d.facts.get("decompressed_to")
        if compression == "raw":
            assert temp is None and d.facts["stream_offset"] == 92 + d.facts["data_len"]
            assert not d.warnings
        else:
            assert any("decompressed to a temporary file" in w for w in d.warnings)
            assert Path(temp).is_file()
    if temp:
        assert not Path(temp).exists()  # deleted on close


def test_zstd_single_frame_from_cramjam_one_shot(
    guest_stream: tuple[SparseMemory, Path], tmp_path: Path
) -> None:
    mem, stream = guest_stream
    p = save_image(stream, tmp_path / "a.save", compression="raw", padding=0)
    data = bytearray(p.read_bytes())
    head = libvirt_header(True).parse(bytes(data[:92]))
    start = 92 + head.data_len
    body = bytes(cramjam.zstd.compress(bytes(data[start:])))
    data[28:32] = struct.pack("<I", 5)
    p.write_bytes(bytes(data[:start]) + body)
    with open_dump(p) as d:
        assert d.memory.read(0, 2 * MIB) == mem.read(0, 2 * MIB)


def test_zstd_tool_output_reads(guest_stream: tuple[SparseMemory, Path], tmp_path: Path) -> None:
    tool = shutil.which("zstd")
    if tool is None:
        pytest.skip("zstd not installed (apt-get install zstd)")
    mem, stream = guest_stream
    p = save_image(stream, tmp_path / "a.save", compression="raw")
    data = p.read_bytes()
    start = 92 + libvirt_header(True).parse(data[:92]).data_len
    # what libvirt does: the stream piped through the tool (no content size in the frame)
    body = subprocess.run([tool, "-c", "-q"], input=data[start:], capture_output=True, check=True).stdout
    p.write_bytes(data[:28] + struct.pack("<I", 5) + data[32:start] + body)
    with open_dump(p) as d:
        assert d.memory.read(0, 2 * MIB) == mem.read(0, 2 * MIB)


def test_big_endian_header_and_partial_magic(guest_stream: tuple[SparseMemory, Path], tmp_path: Path) -> None:
    mem, stream = guest_stream
    p = save_image(stream, tmp_path / "be.save", little=False, was_running=False)
    data = bytearray(p.read_bytes())
    data[:16] = b"LibvirtQemudPart"
    p.write_bytes(bytes(data))
    with open_dump(p) as d:
        assert d.facts["libvirt_byte_order"] == "big" and d.facts["was_running"] is False
        assert any("partial" in w for w in d.warnings)
        assert d.memory.read(0, 2 * MIB) == mem.read(0, 2 * MIB)


def patched(guest_stream: tuple[SparseMemory, Path], tmp: Path, offset: int, value: bytes) -> Path:
    p = save_image(guest_stream[1], tmp / "x.save", compression="gzip")
    data = bytearray(p.read_bytes())
    data[offset : offset + len(value)] = value
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize(
    ("offset", "value", "error", "pattern"),
    [
        (
            28,
            struct.pack("<I", 4),
            UnsupportedError,
            r"lzop compression is not supported \(format at offset 0x1c\)",
        ),
        (28, struct.pack("<I", 6), UnsupportedError, r"sparse .* \(format at offset 0x1c\)"),
        (28, struct.pack("<I", 99), FormatError, r"unknown compression format 99 \(format at offset 0x1c\)"),
        (16, struct.pack("<I", 7), UnsupportedError, r"version 7 .*\(version at offset 0x10\)"),
        (
            20,
            struct.pack("<I", 1 << 30),
            TruncatedError,
            r"data_len 0x40000000 .*\(data_len at offset 0x14\)",
        ),
        (32, struct.pack("<I", 1 << 20), FormatError, r"cookieOffset .*\(cookieOffset at offset 0x20\)"),
    ],
)
def test_bad_headers(
    guest_stream: tuple[SparseMemory, Path],
    tmp_path: Path,
    offset: int,
    value: bytes,
    error: type,
    pattern: str,
) -> None:
    with pytest.raises(error, match=pattern) as info:
        open_dump(patched(guest_stream, tmp_path, offset, value))
    assert "\n" not in str(info.value)


def test_corrupt_compressed_stream_and_no_leftover(
    guest_stream: tuple[SparseMemory, Path], tmp_path: Path
) -> None:
    p = save_image(guest_stream[1], tmp_path / "c.save", compression="gzip")
    data = p.read_bytes()
    start = 92 + libvirt_header(True).parse(data[:92]).data_len
    p.write_bytes(data[: start + 1000] + b"\xff" * 64 + data[start + 1064 :])
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("vmci-stream-*"))
    with pytest.raises(FormatError, match=r"cannot decompress the gzip stream.*\(stream at offset 0x"):
        open_dump(p)
    assert set(Path(os.environ.get("TMPDIR", "/tmp")).glob("vmci-stream-*")) == before
    # a gzip of a cut stream, and cut gzip data: what was decompressed is read, with warnings
    p.write_bytes(data[:start] + gzip.compress(guest_stream[1].read_bytes()[:200_000]))
    with open_dump(p) as d:
        assert any("truncated stream" in w for w in d.warnings)
        assert d.memory.read(0, 0x10000) == guest_stream[0].read(0, 0x10000)
    p.write_bytes(data[: start + 20_000])
    with open_dump(p) as d:
        assert any("gzip data ends early" in w for w in d.warnings)
        assert any("truncated stream" in w for w in d.warnings)


def test_short_header(tmp_path: Path) -> None:
    p = tmp_path / "s.save"
    p.write_bytes(b"LibvirtQemudSave" + bytes(20))
    with pytest.raises(TruncatedError, match=r"cut short \(virQEMUSaveHeader at offset 0x0\)"):
        open_dump(p)
