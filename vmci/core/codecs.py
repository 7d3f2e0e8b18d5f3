"""Compression, in one place: page codecs (kdump), whole-stream codecs (libvirt save images),
blob decompression (bzImage payloads) and recognising a compressed blob by its magic.

Page codecs (makedumpfile's and QEMU's ``DUMP_DH_COMPRESSED_*`` methods): ``zlib``, ``lzo``
(LZO1X, via lzallright), ``snappy`` (raw, unframed) and ``zstd`` (via cramjam).  A page never
decompresses to more than the caller's limit.  Stream codecs (libvirt's ``virQEMUSaveFormat``):
``gzip``, ``bzip2``, ``xz``, ``zstd``, decompressed chunk by chunk into a file.

Compressed data that does not decompress raises :class:`CodecError` (a ``ValueError`` whose
message says why); callers turn it into their own error with the file offset.  The optional
libraries are imported on first use.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

from vmci.errors import UnsupportedError

Buffer = bytes | bytearray | memoryview

PAGE_CODECS = ("zlib", "lzo", "snappy", "zstd")
STREAM_CODECS = ("gzip", "bzip2", "xz", "zstd")

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Leading bytes of each compressed format :func:`decompress` reads (RFC 1952, bzip2, xz, RFC 8878).
MAGICS = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\0": "xz", ZSTD_MAGIC: "zstd"}

CHUNK = 1 << 20


class CodecError(ValueError):
    """Compressed data that does not decompress; the message says why."""


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def sniff(data: Buffer) -> str | None:
    """The format whose magic ``data`` starts with (``gzip``, ``bzip2``, ``xz``, ``zstd``), or None."""
    head = bytes(data[:6])
    return next((kind for magic, kind in MAGICS.items() if head.startswith(magic)), None)


# -- pages --------------------------------------------------------------------------------------


def decompress_page(method: str, data: Buffer, limit: int) -> Buffer:
    """Decompress one page compressed with ``method``, never producing more than ``limit`` bytes
    (LZO checks the length after: the caller compares it with the page size)."""
    if method == "zlib":
        d = zlib.decompressobj()
        try:
            out = d.decompress(data, limit)
        except zlib.error as e:
            raise CodecError(str(e)) from None
        if d.unconsumed_tail:
            raise CodecError(f"zlib data expands beyond the block size {limit}")
        return out
    if method == "zstd":
        import cramjam

        buf = bytearray(limit)
        try:
            n = cramjam.zstd.decompress_into(bytes(data), buf)
        except cramjam.DecompressionError as e:
            raise CodecError(f"zstd: {e}") from None
        return memoryview(buf)[:n]
    if method == "snappy":
        import cramjam

        try:
            n = cramjam.snappy.decompress_raw_len(bytes(data))
            if n > limit:
                raise CodecError(f"snappy data expands to {n} bytes, beyond the block size {limit}")
            buf = bytearray(n)
            cramjam.snappy.decompress_raw_into(bytes(data), buf)
        except cramjam.DecompressionError as e:
            raise CodecError(f"snappy: {e}") from None
        return buf
    if method == "lzo":
        import lzallright

        try:
            # LZO1X cannot expand 4 KiB of input to more than about 1 MiB; the length is checked after
            return lzallright.LZOCompressor.decompress(bytes(data), output_size_hint=limit)
        except lzallright.LZOError as e:
            raise CodecError(f"lzo: {e}") from None
    raise UnsupportedError(f"unknown page compression {method!r}")


def compress_page(method: str, page: Buffer) -> bytes:
    """Compress one page as makedumpfile and QEMU do (zlib level 1, zstd level 1, raw snappy, LZO1X-1)."""
    if method == "zlib":
        return zlib.compress(page, 1)
    if method == "zstd":
        import cramjam

        return bytes(cramjam.zstd.compress(bytes(page), level=1))
    if method == "snappy":
        import cramjam

        return bytes(cramjam.snappy.compress_raw(bytes(page)))
    if method == "lzo":
        import lzallright

        return lzallright.LZOCompressor().compress(bytes(page))
    raise UnsupportedError(f"unknown compression {method!r}")


def page_compressor(method: str, *, exact: bool = True) -> Callable[[Buffer], bytes]:
    """A function compressing one page with ``method``, as :func:`compress_page` does.  With
    ``exact=False`` zlib pages come from ISA-L's deflate when python-isal is installed (the
    ``fast`` extra): the same zlib format at the same level, about twice as fast, other bytes."""
    if method == "zlib" and not exact:
        try:
            from isal import isal_zlib
        except ImportError:
            pass
        else:
            def isal_page(page: Buffer) -> bytes:
                return bytes(isal_zlib.compress(page, 1))

            return isal_page

    def page_of(page: Buffer) -> bytes:
        return compress_page(method, page)

    return page_of


# -- whole blobs --------------------------------------------------------------------------------


def decompress(kind: str, data: Buffer) -> bytes:
    """Decompress a whole blob (``gzip``, ``bzip2``, ``xz`` or ``zstd``, e.g. from :func:`sniff`)."""
    import bz2
    import gzip
    import lzma

    try:
        if kind == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
        if kind == "gzip":
            return gzip.decompress(data)
        if kind == "bzip2":
            return bz2.decompress(data)
        if kind == "zstd":
            import cramjam

            try:
                return bytes(cramjam.zstd.decompress(bytes(data)))
            except cramjam.DecompressionError as e:
                raise CodecError(str(e)) from None
    except (lzma.LZMAError, OSError, ValueError, EOFError) as e:
        raise CodecError(str(e)) from None
    raise UnsupportedError(f"unknown compression {kind!r} ({', '.join(STREAM_CODECS)})")


# -- streams ------------------------------------------------------------------------------------


def decompress_stream(kind: str, reader: Reader, out: BinaryIO) -> str | None:
    """Decompress everything ``reader`` yields into ``out``, chunk by chunk; return a note worth
    a warning (input cut short, decompressed in memory), or None.

    Input that ends early is not an error: what came out is kept, and the note says so.
    """
    import lzma

    try:
        if kind == "zstd":
            return _zstd_stream(reader, out)
        with _stream_opener(kind)(reader) as f:
            _copy(f.read1, out)
    except EOFError:  # the compressed data is cut short: keep what came out
        return f"the {kind} data ends early; the stream is read as far as it was decompressed"
    except (OSError, lzma.LZMAError, zlib.error) as e:
        raise CodecError(f"cannot decompress the {kind} stream: {e}") from None
    return None


def compress_stream(kind: str, reader: Reader, out: BinaryIO) -> None:
    """Compress everything ``reader`` yields into ``out`` (``raw`` copies it), chunk by chunk."""
    if kind == "zstd":
        import cramjam

        comp = cramjam.zstd.Compressor()
        while block := reader.read(CHUNK):
            comp.compress(block)
            out.write(bytes(comp.flush()))
        out.write(bytes(comp.finish()))
        return
    if kind == "raw":
        _copy(reader.read, out)
        return
    import bz2
    import gzip
    import lzma

    sinks: dict[str, Callable[[], Any]] = {
        "gzip": lambda: gzip.GzipFile(fileobj=out, mode="wb", mtime=0),
        "bzip2": lambda: bz2.BZ2File(out, "wb"),
        "xz": lambda: lzma.LZMAFile(out, "wb"),  # noqa: SIM115 - closed by the with below
    }
    if kind not in sinks:
        raise UnsupportedError(f"unknown compression {kind!r} ({', '.join(STREAM_CODECS)})")
    with sinks[kind]() as sink:
        while block := reader.read(CHUNK):
            sink.write(block)


def _stream_opener(kind: str) -> Callable[[Any], Any]:
    import bz2
    import gzip
    import lzma

    openers: dict[str, Callable[[Any], Any]] = {
        "gzip": lambda r: gzip.GzipFile(fileobj=r),
        "bzip2": bz2.BZ2File,
        "xz": lzma.LZMAFile,
    }
    if kind not in openers:
        raise UnsupportedError(f"unknown compression {kind!r} ({', '.join(STREAM_CODECS)})")
    return openers[kind]


def _copy(read: Callable[[int], bytes], out: BinaryIO) -> None:
    while chunk := read(CHUNK):
        out.write(chunk)


def _zstd_stream(reader: Reader, out: BinaryIO) -> str | None:
    # cramjam decompresses whole frames only: use the zstd tool for true streaming when present
    import shutil
    import subprocess

    tool = shutil.which("zstd")
    if tool is not None:
        proc = subprocess.Popen([tool, "-dcq"], stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stderr is not None
        try:
            while chunk := reader.read(CHUNK):
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise CodecError(f"zstd cannot decompress the stream: {err}")
        return None
    import cramjam

    try:
        out.write(bytes(cramjam.zstd.decompress(reader.read())))
    except cramjam.DecompressionError as e:
        raise CodecError(f"cannot decompress the zstd stream: {e}") from None
    return "zstd decompressed in memory (install the zstd tool for streaming decompression)"
