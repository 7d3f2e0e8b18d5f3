"""libvirt save images (``virsh save``, managed save): ``virQEMUSaveHeader``, the domain XML,
then the QEMU migration stream, raw or piped through a compressor.  Reader and writer.

A raw stream is read in place.  A compressed one is decompressed once, in a streaming way, into
a temporary file that is then indexed like any stream and deleted when the dump is closed.
:func:`write_libvirt` wraps a stream (:func:`vmci.formats.migration.writer.write_migration`) in
a save image, raw or compressed as the header's ``format`` field says.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from vmci.core.codecs import CodecError, compress_stream, decompress_stream
from vmci.core.dump import Dump
from vmci.core.saved_state import LibvirtHeader
from vmci.errors import FormatError, TruncatedError, UnsupportedError, UsageError
from vmci.formats.migration.reader import read_migration
from vmci.formats.source import FileSource, Source
from vmci.layouts.migration import (
    LIBVIRT_FORMATS,
    LIBVIRT_HEADER_SIZE,
    LIBVIRT_MAGIC,
    LIBVIRT_MAGIC_PARTIAL,
    LIBVIRT_VERSION,
    libvirt_header,
)


def is_libvirt(head: bytes) -> bool:
    return head[:16] in (LIBVIRT_MAGIC, LIBVIRT_MAGIC_PARTIAL)


def parse_header(src: Source) -> dict[str, Any]:
    """The header, in whichever byte order makes ``version`` sane (libvirt swaps the same way)."""
    if src.size < LIBVIRT_HEADER_SIZE:
        raise TruncatedError("libvirt save header is cut short", field="virQEMUSaveHeader", offset=0)
    raw = src.read(0, LIBVIRT_HEADER_SIZE)
    if not is_libvirt(raw):
        raise FormatError("not a libvirt save image", field="magic", offset=0)
    header = dict(libvirt_header(True).parse(raw))
    little = True
    if not 1 <= header["version"] <= LIBVIRT_VERSION:
        swapped = dict(libvirt_header(False).parse(raw))
        if 1 <= swapped["version"] <= LIBVIRT_VERSION:
            header, little = swapped, False
        else:
            raise UnsupportedError(
                f"libvirt save image version {header['version']} (1 and 2 are read)",
                field="version",
                offset=16,
            )
    header["byte_order"] = "little" if little else "big"
    if LIBVIRT_HEADER_SIZE + header["data_len"] > src.size:
        raise TruncatedError(
            f"data_len {header['data_len']:#x} runs past the end of the file (size {src.size:#x})",
            field="data_len",
            offset=20,
        )
    if header["cookie_offset"] > header["data_len"]:
        raise FormatError(
            f"cookieOffset {header['cookie_offset']:#x} is beyond data_len {header['data_len']:#x}",
            field="cookieOffset",
            offset=32,
        )
    return header


def _text(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


class _TempStream:
    """The decompressed stream: a temporary file, deleted on close."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _SourceReader:
    """A file-like reader over ``src[start:]`` for the stdlib decompressors."""

    def __init__(self, src: Source, start: int) -> None:
        self.src, self.pos = src, start

    def read(self, n: int = -1) -> bytes:
        left = self.src.size - self.pos
        n = left if n < 0 else min(n, left)
        data = self.src.read(self.pos, n)
        self.pos += n
        return data

    def readable(self) -> bool:
        return True


def read_libvirt(src: FileSource, path: Path) -> Dump:
    """Open a libvirt save image held in ``src``."""
    header = parse_header(src)
    data_len = header["data_len"]
    data = src.read(LIBVIRT_HEADER_SIZE, data_len)
    start = LIBVIRT_HEADER_SIZE + data_len
    kind = LIBVIRT_FORMATS.get(header["format"])
    if kind is None:
        raise FormatError(f"unknown compression format {header['format']}", field="format", offset=28)
    libvirt = LibvirtHeader(
        magic=bytes(header["magic"]).decode("latin-1"),
        version=header["version"],
        byte_order=header["byte_order"],
        data_len=data_len,
        was_running=bool(header["was_running"]),
        compression=kind,
        domain_xml=_text(data),
        cookie_xml=_text(data[header["cookie_offset"] :]) if header["cookie_offset"] else None,
    )
    warnings: list[str] = []
    if header["magic"] == LIBVIRT_MAGIC_PARTIAL:
        warnings.append("the save image is marked partial (LibvirtQemudPart): libvirt never finished it")
    if kind in ("lzop", "sparse"):
        what = "lzop compression" if kind == "lzop" else "sparse (mapped-ram) save images"
        raise UnsupportedError(f"{what} is not supported", field="format", offset=28)
    if kind == "raw":
        dump = read_migration(src, path, start=start, container="libvirt-save")
    else:
        dump, tmp, size = _read_compressed(src, path, start, kind, warnings)
        libvirt = replace(libvirt, decompressed_to=str(tmp), decompressed_size=size)
    assert dump.saved_state is not None  # read_migration sets it
    dump.header = replace(dump.saved_state, libvirt=libvirt)
    dump.warnings[:0] = warnings
    dump.description = f"libvirt save image ({kind}), " + dump.description.split(" in a ")[0]
    return dump


def _read_compressed(src: FileSource, path: Path, start: int, kind: str,
                     warnings: list[str]) -> tuple[Dump, Path, int]:
    """The stream decompressed into a temporary file and read: (dump, the file, its size)."""
    fd, name = tempfile.mkstemp(prefix="vmci-stream-", suffix=".qevm")
    tmp = _TempStream(Path(name))
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                note = decompress_stream(kind, _SourceReader(src, start), out)
            except CodecError as e:
                raise FormatError(str(e), field="stream", offset=start) from None
        if note:
            warnings.append(note)
        inner = FileSource(tmp.path)
        try:
            dump = read_migration(inner, path, container="libvirt-save")
        except BaseException:
            inner.close()
            raise
    except BaseException:
        tmp.close()
        raise
    src.close()  # the compressed file is no longer needed
    dump._closers.append(tmp)
    size = inner.size
    warnings.append(f"the {kind} stream was decompressed to a temporary file ({size:#x} bytes)")
    return dump, tmp.path, size


def write_libvirt(
    out: BinaryIO,
    stream: BinaryIO,
    *,
    xml: str,
    compression: str = "raw",
    cookie: str | None = None,
    was_running: bool = True,
    little: bool = True,
    padding: int = 64 << 10,
) -> int:
    """Wrap the migration stream read from ``stream`` in a libvirt save image; return its size."""
    formats = {name: num for num, name in LIBVIRT_FORMATS.items()}
    if compression not in ("raw", "gzip", "bzip2", "xz", "zstd"):
        raise UsageError(f"cannot write {compression!r} save images (raw, gzip, bzip2, xz, zstd)")
    data = xml.encode() + b"\0"
    cookie_offset = 0
    if cookie is not None:
        cookie_offset = len(data)
        data += cookie.encode() + b"\0"
    data += bytes(padding)
    header = libvirt_header(little).build(
        {
            "magic": LIBVIRT_MAGIC,
            "version": LIBVIRT_VERSION,
            "data_len": len(data),
            "was_running": int(was_running),
            "format": formats[compression],
            "cookie_offset": cookie_offset,
            "unused": [0] * 14,
        }
    )
    assert len(header) == LIBVIRT_HEADER_SIZE
    out.write(header + data)
    start = out.tell()
    compress_stream(compression, stream, out)
    return out.tell() - start + len(header) + len(data)
