"""build(): the actors in the order they act on a real VM, and what each leaves in guest RAM."""

from __future__ import annotations

import pytest

from vmci.arch.x86_64.paging import page_tables
from vmci.errors import UsageError
from vmci.firmware import acpi as reader
from vmci.kernel.vmem import KernelMemory
from vmci.layouts.fw_cfg import GuidLE, VmcoreinfoRfcContent
from vmci.producer.build import build
from vmci.producer.config import Scenario


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
