"""KernelLayout: the kernel's shape that the VMCOREINFO text and the page tables are built from."""

from __future__ import annotations

import pytest

from vmci.errors import UsageError
from vmci.producer import kernel_layout, linux
from vmci.producer.kernel_layout import PHYSICAL_START, PROFILES, START_KERNEL_MAP, KernelLayout, profile


def test_addresses_follow_kaslr_and_phys_base() -> None:
    k = KernelLayout(kaslr_offset=0x1000000, phys_base=-0x200000)
    assert k.runtime("_stext") == 0xFFFFFFFF81000000 + 0x1000000
    assert k.kernel_paddr(k.runtime("_stext")) == 0x1000000 + 0x1000000 - 0x200000
    assert k.kernel_paddr(START_KERNEL_MAP + PHYSICAL_START) == PHYSICAL_START - 0x200000
    with pytest.raises(UsageError, match="no link address for kernel symbol 'nope'"):
        k.link("nope")
    assert KernelLayout(symbols={"_stext": 0xFFFFFFFF81200000}).link("_stext") == 0xFFFFFFFF81200000


def test_paging_mode_bases_and_overrides() -> None:
    four, five = KernelLayout(), KernelLayout(pgtable_l5=True)
    assert (four.direct_map, four.vmalloc, four.vmemmap) == (
        0xFFFF888000000000, 0xFFFFC90000000000, 0xFFFFEA0000000000)
    assert (five.direct_map, five.vmalloc, five.vmemmap) == (
        0xFF11000000000000, 0xFFA0000000000000, 0xFFD4000000000000)
    assert five.value("NUMBER(MAX_PHYSMEM_BITS)") == 52 and four.value("NUMBER(MAX_PHYSMEM_BITS)") == 46
    assert KernelLayout(page_offset_base=0xFFFF900000000000).direct_map == 0xFFFF900000000000
    assert KernelLayout(values={"NUMBER(MAX_PHYSMEM_BITS)": 40}).value("NUMBER(MAX_PHYSMEM_BITS)") == 40


def test_profiles_gate_the_buffers() -> None:
    old, new = KernelLayout(profile="4.9"), KernelLayout(profile="6.1", page_size=16384)
    assert not old.buffers_page_aligned and old.vmcoreinfo_bytes == 4096
    assert new.buffers_page_aligned and new.vmcoreinfo_bytes == 16384 and new.note_size > 16384
    assert old.value("OFFSET(uts_namespace.name)") == 4 and new.value("OFFSET(uts_namespace.name)") == 0
    assert old.osrelease == PROFILES["4.9"].osrelease and profile(PROFILES["6.1"]) is PROFILES["6.1"]
    with pytest.raises(UsageError, match=r"unknown kernel profile '2\.6'"):
        profile("2.6")
    with pytest.raises(UsageError, match="not a power of two"):
        KernelLayout(page_size=3000)


def test_linux_keeps_offering_the_layout() -> None:
    for name in kernel_layout.__all__:
        assert getattr(linux, name) is getattr(kernel_layout, name)
