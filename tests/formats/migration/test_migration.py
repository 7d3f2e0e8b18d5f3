"""QEMU migration streams: generated streams read back byte-exact, device sections, resends, bad input."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmci.core.memory import Range, SparseMemory
from vmci.errors import ExcludedPageError, FormatError, NotFoundError, UnsupportedError, VmciError
from vmci.formats import open_dump
from vmci.formats.migration.writer import Device, VmcoreinfoRecord, standard_devices, write_migration
from vmci.layouts.migration import (
    RAM_SAVE_FLAG_COMPRESS_PAGE,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_MULTIFD_FLUSH,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
)

MIB = 1 << 20
PS = 4096


def guest(size: int = 4 * MIB, seed: int = 1) -> SparseMemory:
    mem = SparseMemory([Range(0, size)])
    rnd = __import__("random").Random(seed)
    for _ in range(40):
        mem.write(rnd.randrange(0, size // PS) * PS, rnd.randbytes(PS))
    mem.write(0x2345, b"not page aligned, crossing a page boundary" * 200)
    return mem


def stream(mem: SparseMemory, tmp: Path, name: str = "s.qevm", **kw: object) -> Path:
    path = tmp / name
    with path.open("wb") as f:
        write_migration(f, mem, **kw)  # type: ignore[arg-type]
    return path


def test_round_trip_byte_exact_with_roms(tmp_path: Path) -> None:
    mem = guest()
    bios = os.urandom(0x40000)
    tables = b"RSDT" * 1000
    p = stream(mem, tmp_path, roms={"pc.bios": bios, "/rom@etc/acpi/tables": tables})
    with open_dump(p) as d:
        assert d.format == "qemu-migration" and d.arch == "x86_64" and not d.warnings
        assert d.facts["machine"] == "pc-q35-7.2" and d.facts["eof"] and d.facts["section_footers"]
        assert d.memory.read(0, 4 * MIB) == mem.read(0, 4 * MIB)
        # ROMs: by name, pc.bios also at 4 GiB - size, others not mapped
        assert d.memory.block("/rom@etc/acpi/tables") == tables + bytes(-len(tables) % PS)
        assert d.memory.read((1 << 32) - len(bios), len(bios)) == bios
        assert [(r.start, r.size) for r in d.memory.ranges] == [
            (0, 4 * MIB),
            ((1 << 32) - len(bios), len(bios)),
        ]
        blocks = {b["name"]: b for b in d.facts["ram_blocks"]}
        assert blocks["/rom@etc/acpi/tables"]["gpa"] is None
        assert blocks["pc.ram"]["absent_pages"] == 0
        with pytest.raises(NotFoundError, match="no RAMBlock"):
            d.memory.block("nope")
        # scanning views: pages() agrees with SparseMemory
        assert {a: bytes(b) for a, b in d.memory.pages(0, 4 * MIB)} == dict(
            (a, bytes(b)) for a, b in mem.pages(0, 4 * MIB)
        )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pages=st.dictionaries(st.integers(0, 255), st.binary(min_size=1, max_size=64), max_size=30),
    stale=st.sets(st.integers(0, 255), max_size=10),
    footers=st.booleans(),
    vmdesc=st.booleans(),
)
def test_round_trip_property_resend_wins(
    tmp_path: Path, pages: dict[int, bytes], stale: set[int], footers: bool, vmdesc: bool
) -> None:
    mem = SparseMemory([Range(0, 256 * PS)])
    for pfn, data in pages.items():
        mem.write(pfn * PS + 100, data)
    old = {pfn * PS: bytes([0xEE]) * PS for pfn in stale}
    devices = [d for d in standard_devices(vmgenid_addr=0x1028) if footers or vmdesc or d.idstr == "vmgenid"]
    p = stream(mem, tmp_path, stale=old, footers=footers, vmdesc=vmdesc, devices=devices)
    with open_dump(p) as d:
        assert d.memory.read(0, 256 * PS) == mem.read(0, 256 * PS)
        assert d.facts["resent_pages"] == len(stale)
        assert d.facts["ram_sections"] == 3 + bool(stale)
        assert d.saved_state is not None
        assert d.saved_state.devices.vmgenid_addr_blob == struct.pack("<Q", 0x1028)


@pytest.mark.parametrize("vmdesc", [True, False])
@pytest.mark.parametrize("footers", [True, False])
def test_device_sections_both_vmcoreinfo_layouts(tmp_path: Path, vmdesc: bool, footers: bool) -> None:
    mem = guest()
    rec = VmcoreinfoRecord(host_format=0, guest_format=1, size=4132, paddr=0x123000)
    keep = (lambda d: True) if (vmdesc or footers) else (lambda d: d.idstr in ("vmcoreinfo", "vmgenid"))
    up = [d for d in standard_devices(vmcoreinfo_record=rec, vmgenid_addr=0x3FF028) if keep(d)]
    rfc = [d for d in standard_devices(vmcoreinfo_rfc_addr=0x3FE028) if keep(d)]
    with open_dump(stream(mem, tmp_path, "up.qevm", devices=up, vmdesc=vmdesc, footers=footers)) as d:
        dev = d.facts["devices"]["vmcoreinfo"]
        assert dev["layout"] == "upstream"
        assert (dev["has_vmcoreinfo"], dev["host_format"], dev["guest_format"]) == (True, 0, 1)
        assert (dev["size"], dev["paddr"]) == (4132, 0x123000)
        assert bytes.fromhex(dev["raw"]) == struct.pack(">?HHIQ", True, 0, 1, 4132, 0x123000)
        assert d.saved_state is not None
        saved = d.saved_state.devices
        record = saved.vmcoreinfo_record
        assert record is not None
        assert (record.host_format, record.guest_format, record.size, record.paddr) == (0, 1, 4132, 0x123000)
        assert d.facts["saved_state"]["fw_cfg_vmcoreinfo_record"] == {
            "host_format": 0, "guest_format": 1, "size": 4132, "paddr": 0x123000}
        assert saved.vmgenid_addr_blob == struct.pack("<Q", 0x3FF028)
        assert d.facts["devices"]["vmgenid"]["vmgenid_addr"] == 0x3FF028
        assert saved.vmcoreinfo_addr_blob is None and "vmcoreinfo_addr_blob" not in d.facts["saved_state"]
    with open_dump(stream(mem, tmp_path, "rfc.qevm", devices=rfc, vmdesc=vmdesc, footers=footers)) as d:
        dev = d.facts["devices"]["vmcoreinfo"]
        assert (dev["layout"], dev["vmcoreinfo_addr"]) == ("rfc", 0x3FE028)
        assert d.saved_state is not None
        saved = d.saved_state.devices
        assert saved.vmcoreinfo_addr_blob == struct.pack("<Q", 0x3FE028)
        assert saved.vmcoreinfo_record is None and saved.vmgenid_addr_blob is None
        assert d.facts["saved_state"] == {"vmcoreinfo_addr_blob": struct.pack("<Q", 0x3FE028).hex()}


def test_unknown_device_without_description_or_footers_is_unsupported(tmp_path: Path) -> None:
    p = stream(guest(), tmp_path, vmdesc=False, footers=False)
    with pytest.raises(UnsupportedError, match=r"cannot find the end of device section .timer.*offset"):
        open_dump(p)


def test_odd_device_payload_is_kept_raw_with_a_warning(tmp_path: Path) -> None:
    odd = Device("vmcoreinfo", b"\x01" * 12, {"fields": [{"name": "x", "type": "buffer", "size": 12}]})
    with open_dump(stream(guest(), tmp_path, devices=[odd])) as d:
        assert d.facts["devices"]["vmcoreinfo"]["layout"] == "unknown"
        assert any("12 bytes" in w for w in d.warnings)
        assert d.facts["saved_state"] == {}
        assert d.saved_state is not None and d.saved_state.devices.vmcoreinfo_record is None
        assert d.saved_state.devices.vmcoreinfo_addr_blob is None


def test_pc_i440fx_stream_and_no_configuration(tmp_path: Path) -> None:
    mem = guest()
    with open_dump(stream(mem, tmp_path, machine="pc-i440fx-7.2")) as d:
        assert d.facts["machine_family"] == "pc"
        assert d.memory.read(0, 4 * MIB) == mem.read(0, 4 * MIB)
    with open_dump(stream(mem, tmp_path, "nc.qevm", configuration=False)) as d:
        assert d.facts["machine"] is None
        assert any("assumes q35" in w for w in d.warnings)
        assert d.memory.read(0, 4 * MIB) == mem.read(0, 4 * MIB)


def test_truncated_stream_keeps_what_was_read(tmp_path: Path) -> None:
    mem = SparseMemory([Range(0, MIB)])
    mem.write(0, os.urandom(MIB))  # every page a PAGE record of 8 + 4096 bytes
    data = stream(mem, tmp_path).read_bytes()
    first = data.index(b"pc.ram", data.index(b"pc.ram") + 1) + 6  # data of page 0, first iteration
    cut = tmp_path / "cut.qevm"
    cut.write_bytes(data[: first + 100 * (PS + 8) + 10])  # pages 0-99 whole, page 100 cut
    with open_dump(cut) as d:
        assert any("truncated stream" in w for w in d.warnings)
        assert not d.facts["eof"]
        assert d.memory.read(0, 100 * PS) == mem.read(0, 100 * PS)
        with pytest.raises(ExcludedPageError, match="not in the stream"):
            d.memory.read(100 * PS, 16)
        assert d.memory.read(100 * PS, 16, zero_fill=True) == bytes(16)
        assert d.facts["devices"] == {}
        assert d.facts["ram_blocks"][0]["absent_pages"] == 256 - 100


# -- bad input --------------------------------------------------------------------------------


def mini(records: bytes, *, block: bytes = b"pc.ram", size: int = 8 * PS, footer: int = 2) -> bytes:
    """A hand-made stream: header, START ram (one block), ``records``, EOS, footer, EOF."""
    out = b"QEVM" + struct.pack(">I", 3)
    out += b"\x01" + struct.pack(">I", 2) + b"\x03ram" + struct.pack(">II", 0, 4)
    out += (
        struct.pack(">Q", size | RAM_SAVE_FLAG_MEM_SIZE)
        + bytes([len(block)])
        + block
        + struct.pack(">Q", size)
    )
    out += records + struct.pack(">Q", RAM_SAVE_FLAG_EOS) + b"\x7e" + struct.pack(">I", footer) + b"\x00"
    return out


def page(addr: int, flags: int = RAM_SAVE_FLAG_PAGE, name: bytes | None = b"pc.ram") -> bytes:
    head = struct.pack(">Q", addr | flags) + (bytes([len(name)]) + name if name is not None else b"")
    return head + (bytes([0xAB]) * PS if flags & RAM_SAVE_FLAG_PAGE else b"\0")


def open_bytes(tmp: Path, data: bytes) -> object:
    p = tmp / "bad.qevm"
    p.write_bytes(data)
    with open_dump(p) as d:
        return d.facts


def test_mini_stream_is_good(tmp_path: Path) -> None:
    facts = open_bytes(tmp_path, mini(page(0) + page(PS, RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE, None)))
    assert isinstance(facts, dict) and facts["ram_blocks"][0]["pages"] == 1


@pytest.mark.parametrize(
    ("data", "error", "pattern"),
    [
        (b"QEVM\0\0\0\2", UnsupportedError, r"version 2 .*version at offset 0x4"),
        (mini(b"")[:8] + b"\x09", FormatError, r"unknown section type 0x09 \(section type at offset 0x8\)"),
        (mini(page(0, name=b"nope")), FormatError, r"unknown RAMBlock 'nope' \(RAMBlock idstr at offset 0x"),
        (mini(page(8 * PS)), FormatError, r"beyond RAMBlock 'pc.ram'.*RAM record addr at offset 0x"),
        (
            mini(page(0, RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE, None)),
            FormatError,
            "continues no RAMBlock",
        ),
        (mini(page(0, RAM_SAVE_FLAG_XBZRLE)), UnsupportedError, r"XBZRLE.*RAM record flags at offset 0x30"),
        (mini(page(0, RAM_SAVE_FLAG_COMPRESS_PAGE)), UnsupportedError, r"COMPRESS_PAGE.*offset 0x30"),
        (mini(page(0, RAM_SAVE_FLAG_MULTIFD_FLUSH)), UnsupportedError, r"multifd.*offset 0x30"),
        (mini(page(0, 0x800)), FormatError, r"unknown RAM record flags 0x800"),
        (mini(b"", footer=7), FormatError, r"footer names section 7, expected 2 \(section footer at offset"),
        (
            mini(b"")[:8] + b"\x08\x00\x03\x00\x00",
            UnsupportedError,
            r"postcopy.*POSTCOPY_ADVISE.*QEMU_VM_COMMAND at offset 0x8",
        ),
        (mini(b"")[:8] + b"\x02\x00\x00\x00\x09", FormatError, r"section id 9 was never started"),
        (
            mini(b"")[:8]
            + b"\x07\x00\x00\x00\x03q35\x05\x1aconfiguration/capabilities\0\0\0\1\0\0\0\1\x0amapped-ram",
            UnsupportedError,
            r"'mapped-ram' capability",
        ),
    ],
)
def test_bad_streams_give_one_line_errors(tmp_path: Path, data: bytes, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern) as info:
        open_bytes(tmp_path, data)
    assert "\n" not in str(info.value)


def test_bad_magic_and_short_header(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cut short"):
        open_bytes(tmp_path, b"QEVM")
    p = tmp_path / "x"
    p.write_bytes(b"QEVM\0\0\0\3")
    with open_dump(p) as d:
        assert any("ends at offset" in w for w in d.warnings)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzzed_streams_never_crash(data: st.DataObject) -> None:
    base = bytearray(mini(page(0) + page(2 * PS, RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE, None)))
    for _ in range(data.draw(st.integers(1, 4))):
        base[data.draw(st.integers(0, len(base) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "f.qevm"
        p.write_bytes(bytes(base[:cut]))
        try:
            with open_dump(p) as d:
                d.memory.read(0, 8 * PS, zero_fill=True)
        except VmciError as e:
            assert "\n" not in str(e)
