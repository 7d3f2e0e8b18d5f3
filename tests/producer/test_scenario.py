"""Scenarios: guest layouts, the actors in order, the truth, determinism, TOML."""

from __future__ import annotations

import json

import pytest

from vmci.arch.x86_64.consts import START_KERNEL_MAP
from vmci.arch.x86_64.paging import page_tables
from vmci.core.memory import Range
from vmci.errors import UsageError
from vmci.firmware import acpi as reader
from vmci.formats import open_dump
from vmci.kernel.vmem import KernelMemory
from vmci.layouts.fw_cfg import GuidLE, VmcoreinfoRfcContent
from vmci.producer.guest import BIOS_ROM_BASE, guest_layout, split_ram
from vmci.producer.scenario import Scenario, build, generate

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


def test_bios_rom_and_its_f_segment_alias() -> None:
    g = build(Scenario(ram="16M"))
    assert g.mem.read(0xFFFFFFF0, 5) == b"\xea\x5b\xe0\x00\xf0"  # reset vector: jmp F000:E05B
    assert g.mem.read(0xFFFF0, 5) == b"\xea\x5b\xe0\x00\xf0"  # the isa-bios alias
    assert g.mem.read(0xE0000, 7) == b"SeaBIOS"


@pytest.mark.parametrize(("firmware", "offset"), [("seabios", 40), ("seabios", 36), ("ovmf", 40)])
def test_firmware_leaves_blob_page_plus_offset_and_vcia_page(firmware: str, offset: int) -> None:
    g = build(Scenario(seed=5, ram="32M", firmware=firmware, rfc_offset=offset))
    assert g.firmware is not None
    page = g.firmware.allocations["etc/vmcoreinfo"].address
    assert page % 4096 == 0
    assert g.vmcoreinfo_device.address == page + offset  # the saved address blob
    ssdt, _ = reader.find_ssdt(g.mem, "VMCOREIN")
    assert ssdt is not None and ssdt.checksum_ok
    vcia, _ = reader.leading_name_dword(ssdt, "VCIA")
    assert vcia == page
    content = VmcoreinfoRfcContent.parse(g.mem.read(page + offset, 16))
    assert (content.version, content.paddr, content.size) == (0, g.placed.note_paddr, 4132)
    assert g.mem.read(page, offset) == bytes(offset)  # the probe suppressor
    if firmware == "seabios":
        assert 0xF0000 <= g.firmware.rsdp_address < 0x100000
    else:
        assert g.firmware.rsdp_address > 0x100000 and g.firmware.rsdp_address % 4096 == 0


def test_upstream_device_and_vmgenid() -> None:
    guid = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
    g = build(Scenario(seed=2, ram="32M", device="upstream", vmgenid=True, vmgenid_guid=guid))
    rec = g.vmcoreinfo_device.record()
    assert g.vmcoreinfo_device.has_vmcoreinfo
    assert rec == {"host_format": 0, "guest_format": 1, "size": 4132, "paddr": g.placed.note_paddr}
    assert reader.find_ssdt(g.mem, "VMCOREIN")[0] is None  # no ACPI for the upstream device
    vg = g.vmgenid_device
    page = g.firmware.allocations["etc/vmgenid_guid"].address
    assert vg.address == page + 40
    assert str(GuidLE.parse(g.mem.read(page + 40, 16))) == guid
    assert g.mem.read(page + 40, 4) == bytes.fromhex("af6e4e32")


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


def test_pinned_kaslr_and_negative_phys_base() -> None:
    g = build(Scenario(ram="512M", kaslr_offset=0x2A000000, phys_base=-346030080))
    assert g.tables is not None and g.tables.text_pa == 0x16600000
    assert b"NUMBER(phys_base)=-346030080\n" in g.placed.text
    with pytest.raises(UsageError, match="not free"):
        build(Scenario(ram="32M", kaslr_offset=0, phys_base=0x10000000))


@pytest.mark.parametrize(("kernel", "la57"), [("4.9", False), ("5.10", True), ("6.12", False)])
def test_profiles_and_paging_modes(kernel: str, la57: bool) -> None:
    g = build(Scenario(seed=4, ram="32M", kernel=kernel, la57=la57, kaslr=False))
    assert g.kernel.kaslr_offset == 0 and g.kernel.phys_base == 0
    text = g.placed.text
    assert (b"SYMBOL(phys_base)=" in text) == (kernel == "4.9")
    assert (b"SYMBOL(init_level4_pgt)=" in text) == (kernel == "4.9")
    assert (b"BUILD-ID=" in text) == (kernel != "4.9")
    if kernel == "4.9":  # .bss buffers inside the kernel image
        assert g.tables.text_pa <= g.placed.note_paddr < g.tables.text_pa + g.tables.image_size
    kvm = KernelMemory(g.mem, page_tables(g.tables.pgd, la57=la57))
    k = g.kernel
    release = kvm.read(k.runtime("init_uts_ns") + k.value("OFFSET(uts_namespace.name)") + 130, 65)
    assert release.rstrip(b"\0") == k.osrelease.encode()
    assert g.cpus[0].la57 == la57


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
    assert data["vmgenid"]["guid_addr"] == data["vmgenid"]["page"] + 40
    assert data["cr3s"] == [data["kernel"]["pgd_paddr"]]
    assert all(v["found"] for k, v in data["expected"].items() if v["applicable"])
    assert not data["expected"]["kdump-header"]["applicable"]


def test_toml_scenario(tmp_path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('[scenario]\nseed = 4\nram = "64M"\nfirmware = "ovmf"\nfaults = ["nonzero-suppressor"]\n')
    s = Scenario.from_toml(p)
    assert (s.seed, s.ram, s.firmware, s.faults) == (4, 64 * MIB, "ovmf", ("nonzero-suppressor",))
    assert Scenario.from_dict(s.to_dict()) == s
    p.write_text("seed = 1\nmemory = 5\n")
    with pytest.raises(UsageError, match="unknown scenario key 'memory'"):
        Scenario.from_toml(p)
    p.write_text("seed = [")
    with pytest.raises(UsageError, match="not valid TOML"):
        Scenario.from_toml(p)
    for bad in ({"device": "x"}, {"rfc_offset": 32}, {"faults": ["nope"]}, {"ram": "lots"}):
        with pytest.raises(UsageError):
            Scenario(**bad)
