"""vmci.core.codecs against the compression libraries themselves: data one side compresses,
the other decompresses."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import zlib
from pathlib import Path

import cramjam
import lzallright
import pytest

from vmci.core import codecs
from vmci.core.codecs import CodecError, compress_page, compress_stream, decompress, decompress_page, sniff
from vmci.errors import UnsupportedError

PAGE = 4096
# text-like, compressible page; and random bytes, which no codec shrinks
TEXT = (b"VMCOREINFO OSRELEASE=6.1.0 SYMBOL(init_uts_ns)=ffffffff82a13a00\n" * 70)[:PAGE]
NOISE = random.Random(7).randbytes(PAGE)

LIBRARY_COMPRESS = {
    "zlib": lambda p: zlib.compress(p, 6),
    "zstd": lambda p: bytes(cramjam.zstd.compress(p)),
    "snappy": lambda p: bytes(cramjam.snappy.compress_raw(p)),
    "lzo": lambda p: lzallright.LZOCompressor().compress(p),
}
LIBRARY_DECOMPRESS = {
    "zlib": zlib.decompress,
    "zstd": lambda b: bytes(cramjam.zstd.decompress(b)),
    "snappy": lambda b: bytes(cramjam.snappy.decompress_raw(b)),
    "lzo": lambda b: lzallright.LZOCompressor.decompress(b),
}


@pytest.mark.parametrize("method", codecs.PAGE_CODECS)
@pytest.mark.parametrize("page", [TEXT, NOISE, bytes(PAGE)], ids=["text", "noise", "zero"])
def test_page_codecs_agree_with_the_libraries(method: str, page: bytes) -> None:
    assert bytes(decompress_page(method, LIBRARY_COMPRESS[method](page), PAGE)) == page
    assert LIBRARY_DECOMPRESS[method](compress_page(method, page)) == page


def test_page_compression_is_what_makedumpfile_writes() -> None:
    # makedumpfile and QEMU call compress2(..., Z_BEST_SPEED): level 1
    assert compress_page("zlib", TEXT) == zlib.compress(TEXT, 1)


@pytest.mark.parametrize("method", ["zlib", "zstd", "snappy"])
def test_a_page_never_decompresses_beyond_the_limit(method: str) -> None:
    big = LIBRARY_COMPRESS[method](bytes(4 * PAGE))
    with pytest.raises(CodecError, match=r"beyond the block size|zstd"):
        decompress_page(method, big, PAGE)


@pytest.mark.parametrize("method", codecs.PAGE_CODECS)
def test_corrupt_pages_raise_codec_error(method: str) -> None:
    with pytest.raises(CodecError, match=method if method != "zlib" else "Error"):
        decompress_page(method, b"\xff" * 64, PAGE)


def test_unknown_methods_are_unsupported() -> None:
    with pytest.raises(UnsupportedError):
        decompress_page("lz4", b"", PAGE)
    with pytest.raises(UnsupportedError):
        compress_page("lz4", TEXT)
    with pytest.raises(UnsupportedError):
        decompress("lz4", b"")


BLOBS = {
    "gzip": gzip.compress(TEXT * 8),
    "bzip2": bz2.compress(TEXT * 8),
    "xz": lzma.compress(TEXT * 8, format=lzma.FORMAT_XZ),
    "zstd": bytes(cramjam.zstd.compress(TEXT * 8)),
}


@pytest.mark.parametrize("kind", sorted(BLOBS))
def test_sniff_and_decompress_whole_blobs(kind: str) -> None:
    assert sniff(BLOBS[kind]) == kind
    assert decompress(kind, BLOBS[kind]) == TEXT * 8


def test_sniff_rejects_the_rest() -> None:
    assert sniff(b"") is None
    assert sniff(b"\x7fELF") is None
    assert sniff(lzma.compress(b"x", format=lzma.FORMAT_ALONE)) is None  # legacy .lzma: not read
    with pytest.raises(CodecError):
        decompress("gzip", BLOBS["gzip"][:20] + b"\0" * 20)


def _stream(kind: str, tmp_path: Path, data: bytes) -> tuple[str | None, bytes]:
    out = tmp_path / f"out-{kind}"
    with out.open("wb") as f:
        note = codecs.decompress_stream(kind, io.BytesIO(data), f)
    return note, out.read_bytes()


@pytest.mark.parametrize("kind", sorted(BLOBS))
def test_streams_decompress_chunk_by_chunk(kind: str, tmp_path: Path) -> None:
    payload = random.Random(3).randbytes(3 << 20)  # more than one chunk
    compressed = {
        "gzip": lambda d: gzip.compress(d),
        "bzip2": lambda d: bz2.compress(d),
        "xz": lambda d: lzma.compress(d),
        "zstd": lambda d: bytes(cramjam.zstd.compress(d)),
    }[kind](payload)
    note, got = _stream(kind, tmp_path, compressed)
    assert got == payload and note is None


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_a_cut_stream_keeps_what_came_out(kind: str, tmp_path: Path) -> None:
    payload = random.Random(4).randbytes(1 << 20)
    whole = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}[kind](payload)
    note, got = _stream(kind, tmp_path, whole[: len(whole) // 2])
    assert note is not None and "ends early" in note
    assert payload.startswith(got)


def test_a_corrupt_stream_says_which(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="cannot decompress the gzip stream"):
        _stream("gzip", tmp_path, b"\x1f\x8b" + b"\xff" * 100)


def test_zstd_without_the_tool_is_decompressed_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    note, got = _stream("zstd", tmp_path, BLOBS["zstd"])
    assert got == TEXT * 8 and note is not None and "in memory" in note
    with pytest.raises(CodecError, match="cannot decompress the zstd stream"):
        _stream("zstd", tmp_path, codecs.ZSTD_MAGIC + b"\xff" * 32)


@pytest.mark.parametrize("kind", ["raw", "gzip", "bzip2", "xz", "zstd"])
def test_compressed_streams_read_back_with_the_libraries(kind: str) -> None:
    payload = random.Random(5).randbytes(1 << 20) + bytes(1 << 20)
    out = io.BytesIO()
    compress_stream(kind, io.BytesIO(payload), out)
    back = {
        "raw": bytes,
        "gzip": gzip.decompress,
        "bzip2": bz2.decompress,
        "xz": lzma.decompress,
        "zstd": lambda b: bytes(cramjam.zstd.decompress(b)),
    }[kind](out.getvalue())
    assert back == payload
    if kind == "gzip":
        assert out.getvalue()[4:8] == bytes(4)  # mtime 0: the same input gives the same bytes
