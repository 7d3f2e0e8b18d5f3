"""The AML encoder: exact byte patterns, PkgLength and integer round trips through the reader's
tiny decoder (vmci.firmware.acpi)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmci.errors import FormatError
from vmci.firmware.acpi import decode_integer, decode_name_string, decode_pkg_length, parse_leading_name
from vmci.layouts.acpi import SdtHeader, checksum8
from vmci.producer import aml


@pytest.mark.parametrize(
    ("body", "encoded"),
    [
        (0, b"\x01"),
        (62, b"\x3f"),  # 62 + 1 = 63: the largest one-byte value
        (63, b"\x41\x04"),  # 65 = 0x41: lead 0x40 | low nibble 1, then 0x41 >> 4
        (0xFFD, b"\x4f\xff"),  # 0xFFF with two bytes
        (0xFFE, b"\x81\x00\x01"),  # 0x1001 needs three bytes
        (0xFFFFC, b"\x8f\xff\xff"),
        (0xFFFFD, b"\xc1\x00\x00\x01"),
        ((1 << 28) - 5, b"\xcf\xff\xff\xff"),
    ],
)
def test_pkg_length_boundaries(body: int, encoded: bytes) -> None:
    assert aml.pkg_length(body) == encoded


def test_pkg_length_rejects_too_long() -> None:
    with pytest.raises(ValueError, match="PkgLength limit"):
        aml.pkg_length((1 << 28) - 4)
    with pytest.raises(ValueError):
        aml.pkg_length(-1)


@given(st.integers(min_value=0, max_value=(1 << 28) - 5))
def test_pkg_length_round_trip_and_minimal(body: int) -> None:
    enc = aml.pkg_length(body)
    value, n = decode_pkg_length(enc + b"tail")
    assert n == len(enc)
    assert value == body + n  # PkgLength counts its own bytes
    smallest = next(k for k, lim in ((1, 0x3F), (2, 0xFFF), (3, 0xFFFFF), (4, 1 << 28)) if body + k <= lim)
    assert n == smallest


@given(st.binary(max_size=300))
def test_scope_pkg_length_covers_body(body: bytes) -> None:
    term = aml.scope("\\_SB", body)
    assert term[0] == aml.SCOPE_OP
    value, _n = decode_pkg_length(term, 1)
    assert 1 + value == len(term)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_integer_round_trip_shortest(value: int) -> None:
    enc = aml.integer(value)
    decoded, kind, end = decode_integer(enc)
    assert (decoded, end) == (value, len(enc))
    if value == 0:
        assert kind == "Zero"
    elif value == 1:
        assert kind == "One"
    else:
        width = next(w for w in (1, 2, 4, 8) if value < 1 << (8 * w))
        assert kind == {1: "ByteConst", 2: "WordConst", 4: "DWordConst", 8: "QWordConst"}[width]


@given(st.integers(min_value=0, max_value=(1 << 64) - 1), st.binary(max_size=4))
def test_the_guest_side_decoder_agrees_with_the_reader(value: int, tail: bytes) -> None:
    """aml.decode_integer is the producer's (the guest interpreter's) own; the reader's is separate."""
    enc = b"\x70" + aml.integer(value) + tail
    assert aml.decode_integer(enc, 1) == (value, 1 + len(aml.integer(value)))
    reader_value, _, reader_end = decode_integer(enc, 1)
    assert (reader_value, reader_end) == aml.decode_integer(enc, 1)


def test_the_guest_side_decoder_refuses_what_is_not_an_integer() -> None:
    assert aml.decode_integer(aml.ones()) == ((1 << 64) - 1, 1)
    for bad, where in ((b"", 0), (b"\x0c\x01\x02", 0), (b"\x0d", 0), (b"\x0a\x05", 2)):
        with pytest.raises(ValueError, match="no AML integer"):
            aml.decode_integer(bad, where)


@given(st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_dword_const_is_always_five_bytes(value: int) -> None:
    enc = aml.dword_const(value)
    assert len(enc) == 5 and enc[0] == 0x0C
    assert decode_integer(enc) == (value, "DWordConst", 5)


def test_explicit_constants() -> None:
    assert aml.zero() == b"\x00" and aml.one() == b"\x01" and aml.ones() == b"\xff"
    assert decode_integer(aml.ones())[0] == (1 << 64) - 1
    assert aml.byte_const(0x28) == b"\x0a\x28"
    assert aml.word_const(0x1234) == b"\x0b\x34\x12"
    assert aml.qword_const(1 << 40) == b"\x0e" + (1 << 40).to_bytes(8, "little")
    with pytest.raises(ValueError):
        aml.byte_const(256)
    with pytest.raises(ValueError):
        aml.integer(1 << 64)


@pytest.mark.parametrize(
    ("path", "encoded"),
    [
        ("VCIA", b"VCIA"),
        ("\\_SB", b"\\_SB_"),
        ("\\_GPE._E05", b"\\\x2e_GPE_E05"),
        ("\\_SB.VGEN", b"\\\x2e_SB_VGEN"),
        ("\\_SB.PCI0.VMCI", b"\\\x2f\x03_SB_PCI0VMCI"),
        ("^^FOO", b"^^FOO_"),
        ("\\", b"\\\x00"),
    ],
)
def test_name_strings(path: str, encoded: bytes) -> None:
    assert aml.name_string(path) == encoded


segment = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=1).flatmap(
    lambda lead: st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789", max_size=3).map(lambda r: lead + r)
)


@given(st.sampled_from(["", "\\", "^", "^^"]), st.lists(segment, min_size=1, max_size=6))
def test_name_string_round_trip(prefix: str, segs: list[str]) -> None:
    enc = aml.name_string(prefix + ".".join(segs))
    decoded, end = decode_name_string(enc)
    assert end == len(enc)
    assert decoded == prefix + ".".join(s.ljust(4, "_") for s in segs)


@pytest.mark.parametrize("bad", ["", "1ABC", "ABCDE", "ab", "A.B-C"])
def test_bad_name_segments_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        aml.name_seg(bad) if "." not in bad else aml.name_string(bad)


def test_qemu_style_terms() -> None:
    # the exact shapes QEMU's aml_* helpers emit for the vmgenid/vmcoreinfo SSDTs
    assert aml.name_dword("VCIA") == b"\x08VCIA\x0c\x00\x00\x00\x00"
    assert aml.name_dword_value_offset("VCIA") == 6
    assert aml.store(aml.package(2), aml.local(0)) == b"\x70\x12\x02\x02\x60"
    assert aml.index(aml.local(0), aml.zero()) == b"\x88\x60\x00\x00"
    assert aml.add(aml.name_ref("VCIA"), aml.integer(0x28)) == b"\x72VCIA\x0a\x28\x00"
    assert aml.lequal(aml.name_ref("VCIA"), aml.zero()) == b"\x93VCIA\x00"
    assert aml.return_(aml.local(0)) == b"\xa4\x60"
    assert aml.notify(aml.name_ref("\\_SB.VGEN"), aml.integer(0x80)) == b"\x86\\\x2e_SB_VGEN\x0a\x80"
    assert aml.string("QEMUVMCI") == b"\x0dQEMUVMCI\x00"
    assert aml.device("VMCI") == b"\x5b\x82\x05VMCI"
    assert aml.if_(aml.one()) == b"\xa0\x02\x01"
    assert aml.else_() == b"\xa1\x01"
    assert aml.local(7) == b"\x67" and aml.arg(6) == b"\x6e"


def test_method_flags() -> None:
    m = aml.method("_STA", 0)
    assert m == b"\x14\x06_STA\x00"  # NotSerialized, no args
    m = aml.method("FOO", 2, serialized=True, sync_level=3)
    assert m[-1] == 0x02 | 0x08 | 0x30
    with pytest.raises(ValueError):
        aml.method("FOO", 8)


def test_definition_block_header_and_checksum() -> None:
    table = aml.definition_block("SSDT", aml.name_dword("VCIA", 0x1234), oem_table_id="VMCOREIN")
    hdr = SdtHeader.parse(table)
    assert hdr.signature == b"SSDT" and hdr.length == len(table) == 36 + 10
    assert hdr.oem_id == b"BOCHS " and hdr.oem_table_id == b"VMCOREIN" and hdr.creator_id == b"BXPC"
    assert (hdr.revision, hdr.oem_revision, hdr.creator_revision) == (1, 1, 1)
    assert checksum8(table) == 0
    assert parse_leading_name(table[36:]) == ("VCIA", 0x1234, "DWordConst", 6)


def test_decoders_reject_garbage() -> None:
    with pytest.raises(FormatError):
        decode_pkg_length(b"")
    with pytest.raises(FormatError):
        decode_pkg_length(b"\xc0\x00")  # announces 3 more bytes, has 1
    with pytest.raises(FormatError):
        decode_pkg_length(b"\x70\x00")  # reserved bits set in a multi-byte lead
    with pytest.raises(FormatError):
        decode_integer(b"\x0c\x00\x00")
    with pytest.raises(FormatError):
        decode_integer(b"\x70")
    with pytest.raises(FormatError):
        decode_name_string(b"ab\x00\x00")
    with pytest.raises(FormatError):
        parse_leading_name(b"\x10\x05VCIA")
