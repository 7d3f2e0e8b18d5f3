"""Typed container headers: the facts ``vmci info`` prints are derived from them, key for key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vmci.core.dump import Dump
from vmci.core.headers import (
    ContainerHeader,
    ElfHeader,
    FlattenedInfo,
    KdumpHeader,
    RawHeader,
    Utsname,
)
from vmci.core.memory import Range, SparseMemory
from vmci.core.saved_state import MigrationHeader, SavedState

BASE_KEYS = [
    "signature", "header_version", "abi", "byte_order", "utsname", "timestamp", "status", "status_flags",
    "block_size", "sub_hdr_size", "bitmap_blocks", "max_mapnr", "nr_cpus", "current_cpu",
]


def _read_like(version: int) -> KdumpHeader:
    """A header as the reader fills it for ``version`` (fields the version lacks are None)."""
    fields = {
        1: ("phys_base", "dump_level"),
        2: ("split", "start_pfn", "end_pfn"),
        3: ("offset_vmcoreinfo", "size_vmcoreinfo"),
        4: ("offset_note", "size_note"),
        5: ("offset_eraseinfo", "size_eraseinfo"),
    }
    absent = {name: None for v, names in fields.items() if v > version for name in names}
    present = {name: 0 for v, names in fields.items() if v <= version for name in names}
    return KdumpHeader(header_version=version, **{**present, **absent})


def test_kdump_facts_follow_the_header_version() -> None:
    subs = {
        0: [],
        1: ["phys_base", "phys_base_signed", "dump_level"],
        2: ["split", "start_pfn", "end_pfn"],
        3: ["offset_vmcoreinfo", "size_vmcoreinfo"],
        4: ["offset_note", "size_note"],
        5: ["offset_eraseinfo", "size_eraseinfo"],
    }
    for version in range(7):
        want = BASE_KEYS + [k for v in range(min(version, 5) + 1) for k in subs[v]] + ["compression"]
        assert list(_read_like(version).to_dict()) == want, version


def test_kdump_facts_tail() -> None:
    h = replace(_read_like(6), vmcoreinfo_text=b"OSRELEASE=6.1\n", flattened=FlattenedInfo(7),
                split_files=("a", "b"))
    d = h.to_dict()
    assert list(d)[-4:] == ["vmcoreinfo_text", "compression", "flattened_records", "split_files"]
    assert d["flattened_records"] == 7 and d["split_files"] == ["a", "b"]
    assert d["utsname"] == {"sysname": "", "nodename": "", "release": "", "version": "", "machine": "",
                            "domainname": ""}
    assert d["timestamp"] == {"tv_sec": 0, "tv_usec": 0}


def test_phys_base_signed_by_abi() -> None:
    # QEMU 7.2's header for a kernel loaded 330 MiB below its link address (x86_64)
    assert KdumpHeader(phys_base=0xFFFFFFFFEB600000).phys_base_signed == -346030080
    assert KdumpHeader(abi="i386", phys_base=0xFFE00000).phys_base_signed == -0x200000
    assert KdumpHeader(abi="arm32", phys_base=0x7FFFFFFF).phys_base_signed == 0x7FFFFFFF
    assert KdumpHeader(phys_base=None).phys_base_signed is None


def test_elf_facts() -> None:
    h = ElfHeader(elf_class=64, e_machine="EM_X86_64", e_phnum=0xFFFF, program_headers=70002, pt_load=70001,
                  quirks=["q"], producer_guess="qemu")
    assert h.to_dict() == {
        "elf_class": 64, "e_machine": "EM_X86_64", "e_phnum": 0xFFFF, "program_headers": 70002,
        "pn_xnum": True, "pt_load": 70001, "quirks": ["q"], "producer_guess": "qemu",
    }
    assert "flattened_records" in replace(h, flattened=FlattenedInfo(3)).to_dict()
    assert "byte_order" not in h.to_dict()


def test_dump_facts_are_derived_from_the_header() -> None:
    mem = SparseMemory([Range(0, 4096)])
    d = Dump(Path("x"), "raw", "raw", mem, header=RawHeader(0x1000))
    assert d.facts == {"base": 0x1000}
    assert Dump(Path("x"), "raw", "raw", mem).facts == {} and isinstance(Dump(Path("x"), "", "", mem).header,
                                                                          ContainerHeader)
    saved = SavedState(MigrationHeader(
        stream_version=3, machine="pc", machine_family="pc", family_guessed=False, page_size=4096,
        capabilities=(), stream_offset=0, stream_end=0, eof=True, section_footers=True, ram_sections=0,
        ram_records=0, resent_pages=0, vmdesc_offset=None, vmdesc_devices=None, below_4g=None,
        ram_blocks=(), sections=()))
    dump = Dump(Path("x"), "qemu-migration", "", mem, header=saved)
    assert dump.saved_state is saved and dump.facts == saved.to_dict()


def test_utsname() -> None:
    assert list(Utsname(machine="x86_64").to_dict()) == ["sysname", "nodename", "release", "version",
                                                         "machine", "domainname"]
