"""generate(): guest layouts, the dump and its truth sidecar, determinism."""

from __future__ import annotations

import json

import pytest

from vmci.arch.x86_64.consts import START_KERNEL_MAP
from vmci.arch.x86_64.paging import page_tables
from vmci.core.memory import Range
from vmci.errors import UsageError
from vmci.formats import open_dump
from vmci.kernel.vmem import KernelMemory
from vmci.producer.guest import BIOS_ROM_BASE, guest_layout, split_ram
from vmci.producer.scenario import Scenario, generate

GIB, MIB = 1 << 30, 1 << 20


def test_ram_split_as_qemu_does() -> None:
    assert split_ram(2 * GIB, "q35") == (2 * GIB, 0)
    assert split_ram(0xB0000000, "q35") == (0x80000000, 0x30000000)
    assert split_ram(16 * GIB, "q35") == (2 * GIB, 14 * GIB)
    assert split_ram(4 * GIB, "pc") == (3 * GIB, 1 * GIB)  # QEMU pc_init1: "-M pc -m 4G -> 3072M low"
    big = guest_layout(16 * GIB)
    assert [(r.start, r.end) for r in big.ranges] == [
        (0, 2 * GIB), (BIOS_ROM_BASE, 4 * GIB), (4 * GIB, 18 * GIB)]
    ovmf = guest_layout(64 * MIB, firmware="ovmf", vga_hole=True)
    assert ovmf.bios_rom is None
    assert list(ovmf.ranges) == [Range(0, 0xA0000), Range(0xC0000, 64 * MIB - 0xC0000)]
    with pytest.raises(UsageError):
        guest_layout(3 * MIB + 5)


def test_kernel_relations_and_translation(tmp_path) -> None:
    truth = generate(Scenario(seed=9, ram="48M", pti=True), tmp_path / "d.elf", "elf")
    k = truth["kernel"]
    assert k["text_pa"] == k["text_va"] - START_KERNEL_MAP + k["phys_base"]
    assert k["kaslr_offset"] % (2 * MIB) == 0 and k["pti"]
    with open_dump(truth.path) as d:
        assert [n.name for n in d.notes] == ["CORE", "CORE", "QEMU", "QEMU", "VMCOREINFO"]
        text = d.notes[-1].desc
        assert f"KERNELOFFSET={k['kaslr_offset']:x}\n".encode() in text
        assert f"NUMBER(phys_base)={k['phys_base']}\n".encode() in text
        cpu = d.cpus[0]
        assert cpu.cr3 is not None and cpu.cr3 & ~0xFFF == k["pgd_paddr"]
        kvm = KernelMemory(d.memory, page_tables(k["pgd_paddr"]))
        assert kvm.read(k["uts_release_vaddr"], 14) == k["osrelease"].encode()[:14]
        assert kvm.read(k["linux_banner"], 14) == b"Linux version "
        assert kvm.translate(k["swapper_pg_dir"]) == k["pgd_paddr"]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path) -> None:
    a = generate(Scenario(seed=11, ram="16M", vmgenid=True), tmp_path / "a.kdump", "kdump")
    b = generate(Scenario(seed=11, ram="16M", vmgenid=True), tmp_path / "b.kdump", "kdump")
    c = generate(Scenario(seed=12, ram="16M", vmgenid=True), tmp_path / "c.kdump", "kdump")
    assert a.path.read_bytes() == b.path.read_bytes()
    ta, tb = json.loads(a.truth_path.read_text()), json.loads(b.truth_path.read_text())
    ta["files"] = tb["files"] = None
    assert ta == tb
    assert a.addr_blob == b.addr_blob and a.vmgenid_addr_blob == b.vmgenid_addr_blob
    assert a.path.read_bytes() != c.path.read_bytes()
    assert a["vmgenid"]["guid"] != c["vmgenid"]["guid"]


def test_truth_sidecar_and_blob_files(tmp_path) -> None:
    t = generate(Scenario(seed=3, ram="32M", vmgenid=True), tmp_path / "x.elf", "elf")
    data = json.loads((tmp_path / "x.elf.truth.json").read_text())
    assert data["files"] == {"dump": "x.elf", "addr_blob": "x.elf.addr-blob", "fw_cfg_record": None,
                             "vmgenid_addr": "x.elf.vmgenid-addr"}
    blob = (tmp_path / "x.elf.addr-blob").read_bytes()
    assert blob == t.addr_blob and int.from_bytes(blob, "little") == data["device"]["page"] + 40
    assert data["device"]["blob"] == data["device"]["content_addr"]
    assert data["acpi"]["tables"]["SSDT:VMCOREIN"] == data["device"]["ssdt"]
    with open_dump(t.path) as d:  # the bytes there are that table (no reader involved)
        assert d.memory.read(data["device"]["ssdt"], 4) == b"SSDT"
        assert d.memory.read(data["device"]["ssdt"] + 16, 8) == b"VMCOREIN"
    assert data["vmgenid"]["guid_addr"] == data["vmgenid"]["page"] + 40
    assert data["cr3s"] == [data["kernel"]["pgd_paddr"]]
    assert all(v["found"] for k, v in data["expected"].items() if v["applicable"])
    assert not data["expected"]["kdump-header"]["applicable"]


