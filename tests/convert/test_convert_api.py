"""vmci.convert: round trips from every source the producer writes, with its memory map on.

Oracles: the producer's own guest (its SparseMemory is the truth of every byte; its plan the truth of
every page class; its kernel layout the truth of phys_base, utsname and the VMCOREINFO text), never
vmci's reader of the source.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vmci.convert import TARGETS, convert, output_paths
from vmci.convert.filters import describe, filters_for, level_of, zero_pages
from vmci.core.headers import ConversionRecord, ElfHeader, KdumpHeader
from vmci.core.memory import PAGE_SIZE
from vmci.errors import ExcludedPageError, NotFoundError, UsageError, VmciError
from vmci.formats import open_dump
from vmci.formats.kdump import open_kdump_set
from vmci.formats.migration.cpu_writer import cpu_devices
from vmci.formats.migration.writer import standard_devices, write_migration
from vmci.kernel.vmcoreinfo import VmcoreInfo, is_synthesized
from vmci.layouts.elf import EM_386, EM_X86_64
from vmci.producer import qemu_dump as qd
from vmci.producer.scenario import Guest, Scenario, build

RAM = 40 << 20


@pytest.fixture(scope="module")
def guest() -> Guest:
    return build(Scenario(ram=RAM, kernel="6.1", seed=21, mem_map=True, cpus=2))


@pytest.fixture(scope="module")
def sources(guest: Guest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The guest as QEMU's ELF (7.1 layout and 7.2 with EM_386), QEMU's kdump (hexadecimal
    phys_base), a migration stream with the vCPUs' state."""
    d = tmp_path_factory.mktemp("sources")
    note = qd.guest_note(guest.mem, guest.vmcoreinfo_device)
    notes = qd.qemu_notes(guest.cpus, note)
    out = {"elf": d / "guest.elf", "kdump": d / "guest.kdump", "migration": d / "guest.migration",
           "em386": d / "em386.elf"}
    with out["elf"].open("wb") as f:
        qd.write_qemu_elf(f, guest.mem, notes, qemu_version=(7, 1))
    with out["kdump"].open("wb") as f:
        qd.write_qemu_kdump(f, guest.mem, notes, note, nr_cpus=len(guest.cpus), flattened=False)
    with out["migration"].open("wb") as f:
        devices = standard_devices(vmcoreinfo_rfc_addr=guest.vmcoreinfo_device.address)  # type: ignore[union-attr]
        write_migration(f, guest.mem, devices=devices + cpu_devices(guest.cpus))
    from vmci.formats.elf import write_elf

    with out["em386"].open("wb") as f:  # QEMU when its first vCPU is not in long mode
        write_elf(f, guest.mem, notes, machine=EM_386, section_headers_first=True, ehsize_quirk=True)
    return out


def pfn_set(bits: bytes) -> set[int]:
    return set(np.flatnonzero(np.unpackbits(np.frombuffer(bits, np.uint8), bitorder="little")).tolist())


def check_round_trip(guest: Guest, path: Path | list[Path], level: int) -> dict[str, Any]:
    """Every RAM page of the converted dump: retained ones equal the guest's bytes, excluded ones
    are reported excluded, and the excluded set is the producer's truth for ``level``."""
    want = guest.mem_map.excluded(level & ~1) if guest.mem_map is not None else set()
    d = open_kdump_set(path) if isinstance(path, list) else open_dump(path)
    with d:
        excluded: set[int] = set()
        for r in guest.layout.ram_ranges():
            for addr in range(r.start, r.end, PAGE_SIZE):
                try:
                    page = d.memory.read(addr, PAGE_SIZE)
                except ExcludedPageError:
                    excluded.add(addr // PAGE_SIZE)
                    continue
                assert page == guest.mem.read(addr, PAGE_SIZE), hex(addr)
        assert excluded == want
        return {"header": d.header, "notes": d.notes, "cpus": d.cpus, "arch": d.arch}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("level", [0, 1, 2, 8, 16, 31])
def test_round_trip_every_target_and_level(guest: Guest, sources: dict[str, Path], tmp_path: Path,
                                           target: str, level: int) -> None:
    out = tmp_path / f"out.{target}"
    result = convert(sources["elf"], out, to=target, level=level)
    assert result.outputs == [out] and out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    facts = check_round_trip(guest, out, level)
    record = facts["header"].converted
    assert isinstance(record, ConversionRecord)
    assert record.dump_level == level and record.target == target and record.vmcoreinfo_source == "elf-note"
    assert dict(record.excluded) == result.excluded
    note = next(n for n in facts["notes"] if n.name == "VMCOREINFO")
    assert note.desc == guest.placed.text
    assert [c.regs["rip"] for c in facts["cpus"]] == [c.regs["rip"] for c in guest.cpus]
    if target.startswith("kdump"):
        h = facts["header"]
        assert isinstance(h, KdumpHeader)
        assert h.vmcoreinfo_text == guest.placed.text and h.dump_level == level
        assert h.phys_base_signed == guest.kernel.phys_base  # type: ignore[union-attr]
        assert (h.utsname.sysname, h.utsname.release, h.utsname.machine) == (
            "Linux", guest.kernel.osrelease, "x86_64")  # type: ignore[union-attr]
        assert h.nr_cpus == len(guest.cpus)
    else:
        assert isinstance(facts["header"], ElfHeader) and facts["header"].e_machine == "EM_X86_64"
        assert facts["header"].quirks == []


def test_kdump_from_qemu_repairs_phys_base_and_utsname(guest: Guest, sources: dict[str, Path],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "fixed.kdump"
    result = convert(sources["kdump"], out, level=31)
    pb = guest.kernel.phys_base  # type: ignore[union-attr]
    assert any(r.startswith("phys_base: ") and "hexadecimal" in r for r in result.repairs), result.repairs
    assert any(r.startswith("utsname: ") for r in result.repairs)
    facts = check_round_trip(guest, out, 31)
    assert facts["header"].phys_base_signed == pb == result.phys_base
    with open_dump(sources["kdump"]) as src:
        assert src.header.phys_base_signed != pb  # type: ignore[attr-defined]  (QEMU's misreading)


def test_migration_stream_becomes_a_dump_with_cpu_notes(guest: Guest, sources: dict[str, Path],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "from-migration.kdump"
    result = convert(sources["migration"], out, level=31)
    assert result.vmcoreinfo_source == "address-blob"
    assert any(r.startswith("vCPU registers: 2 NT_PRSTATUS") for r in result.repairs)
    facts = check_round_trip(guest, out, 31)
    assert [n.name for n in facts["notes"]] == ["CORE", "CORE", "QEMU", "QEMU", "VMCOREINFO", "VMCI"]
    for got, want in zip(facts["cpus"], guest.cpus, strict=True):
        assert (got.cr3, got.regs["rip"], got.regs["rsp"]) == (want.cr3, want.regs["rip"], want.regs["rsp"])


@pytest.mark.parametrize("compression", ["raw", "zstd"])
def test_libvirt_save_image(guest: Guest, sources: dict[str, Path], tmp_path: Path, compression: str) -> None:
    """``virsh save`` output (a compressed one too): libvirt's header around the migration stream."""
    from vmci.formats.libvirt import write_libvirt

    save = tmp_path / "guest.save"
    with sources["migration"].open("rb") as s, save.open("wb") as o:
        write_libvirt(o, s, xml="<domain type='kvm'><name>g</name></domain>", compression=compression)
    out = tmp_path / "from-save.elf"
    result = convert(save, out, to="elf", level=16)
    assert any("saved VM" in r for r in result.repairs)
    facts = check_round_trip(guest, out, 16)
    assert [c.cr3 for c in facts["cpus"]] == [c.cr3 for c in guest.cpus]


def test_em386_elf_is_written_as_x86_64(guest: Guest, sources: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fixed.elf"
    result = convert(sources["em386"], out, to="elf", level=0)
    assert any(r.startswith("architecture: the container says EM_386") for r in result.repairs)
    assert any(r.startswith("ELF: e_ehsize is 8") for r in result.repairs)
    facts = check_round_trip(guest, out, 0)
    assert facts["arch"] == "x86_64" and facts["header"].e_machine == "EM_X86_64"
    raw = out.read_bytes()
    assert int.from_bytes(raw[18:20], "little") == EM_X86_64 and int.from_bytes(raw[52:54], "little") == 64


def test_kexec_elf_has_the_kernel_image_and_direct_map(guest: Guest, sources: dict[str, Path],
                                                       tmp_path: Path) -> None:
    from elftools.elf.elffile import ELFFile

    out = tmp_path / "vmcore"
    convert(sources["elf"], out, to="kexec-elf", level=31)
    t = guest.tables
    with out.open("rb") as f:
        loads = [s.header for s in ELFFile(f).iter_segments() if s.header.p_type == "PT_LOAD"]
        names = [n["n_name"] for s in ELFFile(f).iter_segments() if s.header.p_type == "PT_NOTE"
                 for n in s.iter_notes()]
    assert names == ["CORE", "CORE", "VMCOREINFO", "VMCI"]
    image = [p for p in loads if p.p_vaddr >= 0xFFFFFFFF80000000]
    assert image[0].p_vaddr == t.text_va and image[0].p_paddr == t.text_pa  # type: ignore[union-attr]
    ram = [p for p in loads if p.p_vaddr < 0xFFFFFFFF80000000]
    assert all(p.p_vaddr - p.p_paddr == t.page_offset for p in ram)  # type: ignore[union-attr]
    assert all(p.p_offset % PAGE_SIZE == 0 for p in loads if p.p_filesz)


def test_split_sets_out_and_in(guest: Guest, sources: dict[str, Path], tmp_path: Path) -> None:
    result = convert(sources["elf"], tmp_path / "part", level=31, split=3)
    assert result.outputs == output_paths(tmp_path / "part", 3) == [tmp_path / f"part.{i}" for i in (1, 2, 3)]
    check_round_trip(guest, result.outputs, 31)
    spans = []
    for p in result.outputs:
        with open_dump(p) as d:
            h = d.header
            assert isinstance(h, KdumpHeader) and h.split == 1
            spans.append((h.start_pfn, h.end_pfn, h.max_mapnr))
    assert spans[0][0] == 0 and spans[-1][1] == spans[0][2]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    back = tmp_path / "joined.kdump"
    convert(result.outputs, back, level=31)  # a split set in: one file out
    check_round_trip(guest, back, 31)


def test_flattened_output_starts_with_its_headers(guest: Guest, sources: dict[str, Path],
                                                  tmp_path: Path) -> None:
    out = tmp_path / "flat"
    convert(sources["elf"], out, to="kdump-flat", level=31)
    raw = out.read_bytes()
    assert raw.startswith(b"makedumpfile")
    first_offset = int.from_bytes(raw[4096:4104], "big")
    assert first_offset == 0 and raw[4096 + 16:4096 + 24] == b"KDUMP   "  # crash reads strings from the top
    check_round_trip(guest, out, 31)


def test_synthesized_vmcoreinfo_when_none_survives(tmp_path: Path) -> None:
    g = build(Scenario(ram=RAM, kernel="6.1", seed=22, device="none"))
    for addr in (g.placed.note_paddr, g.placed.data_paddr):  # the kernel's buffers are gone
        g.mem.write(addr, bytes(4096))
    src = tmp_path / "bare.elf"
    with src.open("wb") as f:
        qd.write_qemu_elf(f, g.mem, qd.qemu_notes(g.cpus, None), qemu_version=(7, 1))
    with pytest.raises(NotFoundError, match="struct page"):
        convert(src, tmp_path / "x.kdump", level=31)
    assert not list(tmp_path.glob("*x.kdump*"))
    result = convert(src, tmp_path / "synth.kdump", level=1)
    assert result.vmcoreinfo_source == "synthesized"
    assert any("synthesized, marked VMCI_SYNTHESIZED=1" in r for r in result.repairs)
    with open_dump(tmp_path / "synth.kdump") as d:
        text = VmcoreInfo.parse(d.header.vmcoreinfo_text)  # type: ignore[attr-defined]
        assert is_synthesized(text) and text.kerneloffset == g.kernel.kaslr_offset  # type: ignore[union-attr]
        assert text.phys_base.value == g.kernel.phys_base  # type: ignore[union-attr]


def test_interrupted_conversion_leaves_nothing(sources: dict[str, Path], tmp_path: Path) -> None:
    before = hashlib.sha256(sources["elf"].read_bytes()).hexdigest(), os.stat(sources["elf"]).st_mtime_ns

    def stop(stage: str, done: int, total: int) -> None:
        if stage == "pages" and done > 100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(sources["elf"], tmp_path / "never.kdump", level=1, progress=stop)
    assert list(tmp_path.iterdir()) == []
    after = hashlib.sha256(sources["elf"].read_bytes()).hexdigest(), os.stat(sources["elf"]).st_mtime_ns
    assert before == after


def test_bad_arguments(sources: dict[str, Path], tmp_path: Path) -> None:
    for kw in ({"to": "vmss"}, {"compress": "gzip"}, {"level": 32}, {"split": 2, "to": "elf"}, {"split": 0}):
        with pytest.raises(UsageError):
            convert(sources["elf"], tmp_path / "x", **kw)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="never written"):
        convert(sources["elf"], sources["elf"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec", ["zlib", "lzo", "snappy", "zstd", "none"])
def test_every_codec(guest: Guest, sources: dict[str, Path], tmp_path: Path, codec: str) -> None:
    out = tmp_path / "c.kdump"
    result = convert(sources["elf"], out, compress=codec, level=16)
    check_round_trip(guest, out, 16)
    with open_dump(out) as d:
        assert d.header.compression == codec  # type: ignore[attr-defined]
    assert result.compression == codec


def test_filters_registry_and_zero_pages(guest: Guest, sources: dict[str, Path]) -> None:
    assert level_of(["zero", "free"]) == 17 and [f.name for f in filters_for(31)] == [
        "zero", "cache", "cache_private", "user", "free"]
    assert describe(0) == "0 (nothing excluded)" and describe(9) == "9 (zero, user)"
    with pytest.raises(UsageError):
        level_of(["swap"])
    with open_dump(sources["elf"]) as d:
        zeros = pfn_set(bytes(zero_pages(d.memory).bits))
    ram = {a // PAGE_SIZE for r in guest.layout.ram_ranges() for a in range(r.start, r.end, PAGE_SIZE)}
    written = {p for p in guest.mem.stored_pages()
               if guest.mem.read(p * PAGE_SIZE, PAGE_SIZE).count(0) != PAGE_SIZE}
    assert zeros & ram == ram - written


def test_info_and_analyze_say_what_was_repaired(sources: dict[str, Path], tmp_path: Path) -> None:
    from vmci.analysis.analyze import analyze, dump_info

    out = tmp_path / "fixed.kdump"
    convert(sources["kdump"], out, level=31)
    with open_dump(out) as d:
        facts = dump_info(d).to_dict()["facts"]
        assert facts["converted"]["source_format"] == "kdump" and facts["converted"]["repairs"]
        assert "written by vmci convert" in d.description
        result = analyze(d, vmgenid=False).to_dict()
        assert result["dump"]["converted"]["dump_level"] == 31
    with open_dump(sources["kdump"]) as d:
        assert "converted" not in analyze(d, vmgenid=False).to_dict()["dump"]
        assert "converted" not in dump_info(d).to_dict()["facts"]


def test_record_text_round_trip() -> None:
    rec = ConversionRecord("vmci 0.1.0", "elf", "a.elf", "kdump", 31, "memory-scan", "x86_64", -4096,
                           ("phys_base: was 0\nnow -0x1000",), (("free", 3),))
    back = ConversionRecord.parse(rec.to_text())
    assert back == replace(rec, repairs=("phys_base: was 0 now -0x1000",))
    assert ConversionRecord.parse(b"OSRELEASE=6.1\n") is None


def test_missing_source_is_a_vmci_error(tmp_path: Path) -> None:
    with pytest.raises(VmciError, match="cannot open"):
        convert(tmp_path / "missing.elf", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
