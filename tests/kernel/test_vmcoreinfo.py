"""The VMCOREINFO text model: losslessness, typed values, every lint warning, the note helpers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmci.errors import FormatError, TruncatedError, VmciError
from vmci.kernel.vmcoreinfo import (
    VMCOREINFO_NOTE_SIZE,
    PhysBase,
    VmcoreInfo,
    build_note,
    c_int,
    parse_note,
)
from vmci.layouts.note import NoteHeaderBE, NoteHeaderLE

GOOD = (
    b"OSRELEASE=6.1.0-18-amd64\n"
    b"BUILD-ID=0123456789abcdef0123456789abcdef01234567\n"
    b"PAGESIZE=4096\n"
    b"SYMBOL(init_uts_ns)=ffffffffaca13de0\n"
    b"OFFSET(uts_namespace.name)=0\n"
    b"SYMBOL(swapper_pg_dir)=ffffffffaca0a000\n"
    b"NUMBER(VMALLOC_START)=0xffffc90000000000\n"
    b"SIZE(page)=64\n"
    b"LENGTH(zone.free_area)=11\n"
    b"NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\n"
    b"NUMBER(phys_base)=-346030080\n"
    b"NUMBER(pgtable_l5_enabled)=0\n"
    b"KERNELOFFSET=2a000000\n"
)


def codes(raw: bytes) -> list[str]:
    return [w.code for w in VmcoreInfo.parse(raw).warnings]


def only(raw: bytes, code: str) -> list[int | None]:
    """Line numbers of the ``code`` warnings, asserting no other code appears."""
    ws = VmcoreInfo.parse(raw).warnings
    assert {w.code for w in ws} == {code}, [str(w) for w in ws]
    return [w.line for w in ws]


# -- losslessness -----------------------------------------------------------------------------------


@given(st.binary(max_size=600))
def test_parse_is_lossless_for_any_bytes(raw: bytes) -> None:
    info = VmcoreInfo.parse(raw)
    assert info.raw == raw
    rebuilt = b"".join(ln.raw + (b"\n" if ln.terminated else b"") for ln in info.lines)
    assert rebuilt == raw
    json.dumps(info.to_dict())  # never raises, always JSON


@given(st.lists(st.tuples(st.sampled_from(["OSRELEASE", "PAGESIZE", "SYMBOL(x)", "NUMBER(y)", "Z"]),
                          st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)),
                max_size=30))
def test_lines_and_keys_follow_the_text(pairs: list[tuple[str, str]]) -> None:
    raw = "".join(f"{k}={v}\n" for k, v in pairs).encode()
    info = VmcoreInfo.parse(raw)
    assert [(ln.key, ln.value) for ln in info.lines] == [(k, v) for k, v in pairs]
    for k, _ in pairs:
        assert info.get(k) == next(v for kk, v in pairs if kk == k)  # the first occurrence
        assert info.get_all(k) == [v for kk, v in pairs if kk == k]


def test_str_input_and_equality() -> None:
    assert VmcoreInfo.parse(GOOD.decode()) == VmcoreInfo.parse(GOOD)
    assert VmcoreInfo.parse(GOOD) != VmcoreInfo.parse(GOOD + b"X=1\n")


# -- typed values -----------------------------------------------------------------------------------


def test_typed_values_follow_kernel_formats() -> None:
    info = VmcoreInfo.parse(GOOD)
    assert info.osrelease == "6.1.0-18-amd64"
    assert info.build_id == "0123456789abcdef0123456789abcdef01234567"
    assert info.pagesize == 4096
    assert info.symbol("init_uts_ns") == 0xFFFFFFFFACA13DE0  # bare hex
    assert info.number("VMALLOC_START") == 0xFFFFC90000000000  # the one 0x-prefixed NUMBER
    assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
    assert info.phys_base == PhysBase(-346030080, False)
    assert info.kerneloffset == 0x2A000000  # hex even without 0x
    assert info.offset("uts_namespace", "name") == 0
    assert info.size("page") == 64
    assert info.length("zone.free_area") == 11
    assert info.pgtable_l5_enabled is False
    assert info.crashtime is None
    assert info.symbol("nonexistent") is None
    assert info.keys()[:3] == ["OSRELEASE", "BUILD-ID", "PAGESIZE"]
    assert info.warnings == ()


def test_crashtime_and_legacy_phys_base() -> None:
    info = VmcoreInfo.parse(b"OSRELEASE=4.9.0\nSYMBOL(phys_base)=ffffffff82a10010\nCRASHTIME=1700000000\n")
    assert info.phys_base == PhysBase(0xFFFFFFFF82A10010, True)
    assert info.crashtime == 1700000000


def test_c_int_is_strtol_like() -> None:
    assert c_int(b"010", 0) == 8  # octal, as strtoull base 0
    assert c_int(b"0x1F", 0) == 31
    assert c_int(b"-346030080", 0) == -346030080
    assert c_int(b"ffffffff81000000", 16) == 0xFFFFFFFF81000000
    assert c_int(b"12 ", 0) is None  # drgn needs the number to end the line
    assert c_int(b"1_000", 0) is None
    assert c_int(b"", 16) is None
    assert c_int(b"09", 0) is None


def test_bad_value_raises_format_error_with_field_and_offset() -> None:
    raw = b"OSRELEASE=x\nPAGESIZE=4k\n"
    with pytest.raises(FormatError) as e:
        VmcoreInfo.parse(raw).pagesize  # noqa: B018
    assert e.value.field == "PAGESIZE" and e.value.offset == 12
    assert isinstance(e.value, VmciError)


def test_accessors_tolerate_cr_that_lint_reports() -> None:
    info = VmcoreInfo.parse(GOOD.replace(b"\n", b"\r\n"))
    assert info.pagesize == 4096 and info.osrelease == "6.1.0-18-amd64"
    assert info.get("PAGESIZE") == "4096\r"  # get() is exact


def test_to_dict_is_json() -> None:
    d = json.loads(json.dumps(VmcoreInfo.parse(GOOD).to_dict()))
    assert d["kerneloffset"] == 0x2A000000 and d["phys_base"] == -346030080
    assert d["entries"][0] == {"line": 1, "key": "OSRELEASE", "value": "6.1.0-18-amd64"}
    assert d["warnings"] == []


# -- lint: one test per warning --------------------------------------------------------------------


def test_lint_empty() -> None:
    assert codes(b"") == ["empty"]
    assert codes(b"\0\0\0") == ["empty"]


def test_lint_crlf() -> None:
    assert only(GOOD.replace(b"\n", b"\r\n"), "crlf") == [1]


def test_lint_no_final_newline_says_drgn_ignores_it() -> None:
    ws = VmcoreInfo.parse(GOOD.rstrip(b"\n")).warnings
    assert [w.code for w in ws] == ["no-final-newline"]
    assert "drgn ignores" in ws[0].message and ws[0].line == 13


def test_lint_line_too_long() -> None:
    ok = b"SYMBOL(" + b"a" * 52 + b")=ffffffff81000000"  # 77 bytes + newline = 78 < 79
    assert codes(GOOD + ok + b"\n") == []
    long = b"SYMBOL(" + b"a" * 54 + b")=ffffffff81000000"  # 79 + newline = 80 > 79
    assert only(GOOD + long + b"\n", "line-too-long") == [14]


def test_lint_duplicate_key() -> None:
    assert only(GOOD + b"PAGESIZE=4096\n", "duplicate-key") == [14]


def test_lint_no_equals() -> None:
    assert only(GOOD + b"garbage\n\n", "no-equals") == [14, 15]


def test_lint_non_printable() -> None:
    assert only(GOOD + b"X=caf\xc3\xa9\n", "non-printable") == [14]


def test_lint_nul_padding() -> None:
    ws = VmcoreInfo.parse(GOOD + b"\0\0\0").warnings
    assert [w.code for w in ws] == ["nul-padding"]
    assert "3 NUL" in ws[0].message


def test_lint_nul_inside() -> None:
    assert only(GOOD + b"X=a\0b\n", "nul-inside") == [14]


def test_lint_osrelease_not_first() -> None:
    raw = b"PAGESIZE=4096\n" + GOOD.replace(b"PAGESIZE=4096\n", b"")
    assert only(raw, "osrelease-not-first") == [1]


@pytest.mark.parametrize("key", [b"OSRELEASE", b"PAGESIZE", b"SYMBOL(swapper_pg_dir)"])
def test_lint_missing_drgn_key(key: bytes) -> None:
    raw = b"".join(ln + b"\n" for ln in GOOD.splitlines() if not ln.startswith(key + b"="))
    ws = [w for w in VmcoreInfo.parse(raw).warnings if w.code == "missing-key"]
    assert len(ws) == 1 and key.decode() in ws[0].message and "drgn" in ws[0].message


def test_lint_missing_key_on_unterminated_last_line() -> None:
    raw = b"".join(ln + b"\n" for ln in GOOD.splitlines() if b"swapper" not in ln)
    raw += b"SYMBOL(swapper_pg_dir)=ffffffff82a0a000"
    assert codes(raw) == ["no-final-newline", "missing-key"]
    assert "unterminated" in VmcoreInfo.parse(raw).warnings[1].message


def test_lint_missing_kaslr_keys() -> None:
    raw = GOOD.replace(b"KERNELOFFSET=2a000000\n", b"").replace(b"NUMBER(phys_base)=-346030080\n", b"")
    ws = VmcoreInfo.parse(raw).warnings
    assert [w.code for w in ws] == ["missing-kaslr-key", "missing-kaslr-key"]
    assert "KERNELOFFSET" in ws[0].message and "NUMBER(phys_base)" in ws[1].message


def test_lint_legacy_phys_base_symbol() -> None:
    raw = GOOD.replace(b"NUMBER(phys_base)=-346030080", b"SYMBOL(phys_base)=ffffffff82a10010")
    ws = VmcoreInfo.parse(raw).warnings
    assert [w.code for w in ws] == ["missing-kaslr-key"] and "legacy" in ws[0].message


def test_lint_bad_value() -> None:
    assert only(GOOD + b"SYMBOL(x)=0xzz\n", "bad-value") == [14]
    assert only(GOOD.replace(b"PAGESIZE=4096", b"PAGESIZE=4000"), "bad-value") == [3]
    assert only(GOOD.replace(b"BUILD-ID=0123", b"BUILD-ID=g123"), "bad-value") == [2]


def test_lint_too_large() -> None:
    raw = GOOD + b"".join(b"NUMBER(k%d)=1\n" % i for i in range(400))
    assert len(raw) > 4096
    assert only(raw, "too-large") == [None]


# -- drgn agrees with the lint ----------------------------------------------------------------------


def _drgn():  # type: ignore[no-untyped-def]
    return pytest.importorskip("drgn", reason="drgn is not installed (pip install drgn)")


def test_drgn_accepts_a_clean_text() -> None:
    drgn = _drgn()
    drgn.Program(drgn.host_platform, vmcoreinfo=GOOD)


def test_drgn_rejects_crlf_as_lint_predicts() -> None:
    drgn = _drgn()
    raw = GOOD.replace(b"\n", b"\r\n")
    assert "crlf" in codes(raw)
    with pytest.raises(Exception, match="VMCOREINFO"):
        drgn.Program(drgn.host_platform, vmcoreinfo=raw)


def test_drgn_ignores_unterminated_last_line_as_lint_predicts() -> None:
    drgn = _drgn()
    raw = b"OSRELEASE=6.1\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82a0a000"
    assert "missing-key" in codes(raw)
    with pytest.raises(Exception, match="swapper_pg_dir"):
        drgn.Program(drgn.host_platform, vmcoreinfo=raw)
    drgn.Program(drgn.host_platform, vmcoreinfo=raw + b"\n")


# -- the ELF note -----------------------------------------------------------------------------------


def test_build_note_layout() -> None:
    note = build_note(b"OSRELEASE=x\n")  # 12 bytes: no padding needed
    assert note[:12] == b"\x0b\0\0\0\x0c\0\0\0\0\0\0\0"
    assert note[12:24] == b"VMCOREINFO\0\0"
    assert note[24:] == b"OSRELEASE=x\n"
    odd = build_note("OSRELEASE=xy\n")  # 13 bytes, padded to 16
    assert len(odd) == 24 + 16 and odd.endswith(b"\n\0\0\0")
    assert NoteHeaderLE.sizeof() == NoteHeaderBE.sizeof() == 12
    assert VMCOREINFO_NOTE_SIZE == 4132


@given(st.binary(max_size=5000), st.sampled_from(["little", "big"]))
def test_note_round_trip(desc: bytes, order: str) -> None:
    note = build_note(desc, byteorder=order)
    assert len(note) % 4 == 0
    assert parse_note(b"junk" + note + b"more", 4, order) == ("VMCOREINFO", 0, desc, len(note))


def test_parse_note_big_endian_header() -> None:
    note = build_note(VmcoreInfo.parse(GOOD), byteorder="big")
    assert note[:4] == b"\0\0\0\x0b"
    assert parse_note(note, byteorder="big").desc == GOOD


def test_parse_note_strict_bounds() -> None:
    note = build_note(GOOD)
    with pytest.raises(TruncatedError) as e:
        parse_note(note[:11])
    assert e.value.field == "Nhdr"
    with pytest.raises(TruncatedError) as e:
        parse_note(note[:-1])
    assert e.value.field == "n_descsz"
    with pytest.raises(TruncatedError) as e:
        parse_note(b"\xff\xff\xff\x7f" + note[4:])
    assert e.value.field == "n_namesz"
    with pytest.raises(TruncatedError):
        parse_note(note, offset=len(note))
    with pytest.raises(TruncatedError):
        parse_note(note, offset=-1)


@given(st.binary(max_size=64), st.integers(0, 70))
def test_parse_note_never_raises_anything_but_vmci_errors(buf: bytes, offset: int) -> None:
    try:
        _name, _, desc, total = parse_note(buf, offset)
    except VmciError:
        return
    assert offset + total <= len(buf) and len(desc) <= total
