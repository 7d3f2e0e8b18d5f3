"""The guest Linux kernel's shape, as far as VMCOREINFO and the page tables are concerned: the
version profiles, the link addresses and struct offsets of a plausible x86_64 build (and of an
arm64 one: :data:`AARCH64_LINK`, :data:`AARCH64_VALUES`, measured on Debian's 6.1 arm64 kernel),
and :class:`KernelLayout` (release, build id, KASLR offset, ``phys_base``, paging mode).

:mod:`vmci.producer.linux` writes the VMCOREINFO text and the kernel's buffers from a layout.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vmci.arch.aarch64.consts import kimage_vaddr, vmemmap_start
from vmci.arch.aarch64.consts import page_offset as arm64_page_offset
from vmci.arch.aarch64.consts import vmemmap as arm64_vmemmap
from vmci.arch.x86_64.consts import PHYSICAL_START, START_KERNEL_MAP
from vmci.errors import UsageError
from vmci.kernel.vmcoreinfo import vmcoreinfo_note_size

__all__ = ["AARCH64_LINK", "AARCH64_VALUES", "DEFAULT_LINK", "DEFAULT_VALUES", "PHYSICAL_START", "PROFILES",
           "START_KERNEL_MAP", "KernelLayout", "KernelProfile", "profile"]



@dataclass(frozen=True)
class KernelProfile:
    """A point in kernel history; key emission is gated on :attr:`version`."""

    name: str
    version: tuple[int, int]
    description: str
    osrelease: str  # a typical release string of that era (Debian's where there is one)

    def since(self, major: int, minor: int) -> bool:
        return self.version >= (major, minor)


PROFILES: dict[str, KernelProfile] = {
    p.name: p
    for p in (
        KernelProfile("4.9", (4, 9), "SYMBOL(phys_base), init_level4_pgt, log_buf keys, buffers in .bss",
                      "4.9.0-19-amd64"),
        KernelProfile("4.19", (4, 19), "NUMBER(phys_base), init_top_pgt, pgtable_l5_enabled, no BUILD-ID",
                      "4.19.0-27-amd64"),
        KernelProfile("5.10", (5, 10), "BUILD-ID and the lockless printk ring buffer (prb) keys",
                      "5.10.0-33-amd64"),
        KernelProfile("6.1", (6, 1), "Debian 12 era: kallsyms keys, vmap_area_list still present",
                      "6.1.0-18-amd64"),
        KernelProfile("6.3", (6, 3), "folio._folio_dtor/_folio_order replace page.compound_dtor/order",
                      "6.3.13-amd64"),
        KernelProfile("6.6", (6, 6), "PG_hugetlb in folio._flags_1, no compound destructor", "6.6.15-amd64"),
        KernelProfile("6.9", (6, 9), "kernel/vmcore_info.c split: NUMBER(VMALLOC_START), vmemmap",
                      "6.9.7-amd64"),
        KernelProfile("6.12", (6, 12), "page-type mapcount values (PGTY_*), no PG_slab", "6.12.12-amd64"),
    )
}


def profile(name: str | KernelProfile) -> KernelProfile:
    """Look up a profile by name ("4.9", "4.19", "5.10", "6.1", "6.9", "6.12")."""
    if isinstance(name, KernelProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(f"unknown kernel profile {name!r} (known: {', '.join(PROFILES)})") from None


#: Link-time addresses of kernel-image symbols (a plausible x86_64 vmlinux).
DEFAULT_LINK: dict[str, int] = {
    "_stext": 0xFFFFFFFF81000000,
    "kallsyms_offsets": 0xFFFFFFFF82200000,
    "kallsyms_relative_base": 0xFFFFFFFF82263E68,
    "kallsyms_num_syms": 0xFFFFFFFF82263E70,
    "kallsyms_names": 0xFFFFFFFF82263E78,
    "kallsyms_token_table": 0xFFFFFFFF82430A00,
    "kallsyms_token_index": 0xFFFFFFFF82430D88,
    "swapper_pg_dir": 0xFFFFFFFF82A0A000,
    "init_uts_ns": 0xFFFFFFFF82A13DE0,
    "phys_base": 0xFFFFFFFF82A10010,
    "prb": 0xFFFFFFFF82A8E3C8,
    "printk_rb_static": 0xFFFFFFFF82A8E3E0,
    "clear_seq": 0xFFFFFFFF82A8E4A0,
    "log_buf": 0xFFFFFFFF82A8E4C8,
    "log_buf_len": 0xFFFFFFFF82A8E4D0,
    "log_first_idx": 0xFFFFFFFF82A8E4D8,
    "clear_idx": 0xFFFFFFFF82A8E4DC,
    "log_next_idx": 0xFFFFFFFF82A8E4E0,
    "log_end": 0xFFFFFFFF82A8E4E4,  # before 3.5
    "logged_chars": 0xFFFFFFFF82A8E4E8,  # before 3.5
    "node_online_map": 0xFFFFFFFF82B3A0A8,
    "vmap_area_list": 0xFFFFFFFF82B8C2B0,
    "mem_section": 0xFFFFFFFF82F1B3C0,  # the variable (an array symbol before 4.15)
    "node_data": 0xFFFFFFFF82F1C8C0,
    "mem_map": 0xFFFFFFFF82F1CA00,
    "contig_page_data": 0xFFFFFFFF82F1CA40,
}

#: SIZE/OFFSET/LENGTH/NUMBER values of a typical x86_64 build, by key.
DEFAULT_VALUES: dict[str, int] = {
    "LENGTH(mem_section)": 2048,
    "SIZE(mem_section)": 16,
    "OFFSET(mem_section.section_mem_map)": 0,
    "NUMBER(SECTION_SIZE_BITS)": 27,
    "SIZE(page)": 64,
    "SIZE(pglist_data)": 174336,
    "SIZE(zone)": 1664,
    "SIZE(free_area)": 104,
    "SIZE(list_head)": 16,
    "SIZE(nodemask_t)": 128,
    "OFFSET(page.flags)": 0,
    "OFFSET(page._refcount)": 52,
    "OFFSET(page.mapping)": 24,
    "OFFSET(page.lru)": 8,
    "OFFSET(page._mapcount)": 48,
    "OFFSET(page.private)": 40,
    "OFFSET(page.compound_dtor)": 16,
    "OFFSET(page.compound_order)": 17,
    "OFFSET(page.compound_head)": 8,
    "OFFSET(folio._folio_dtor)": 80,  # 6.3-6.5: in the first tail page, like compound_dtor
    "OFFSET(folio._folio_order)": 81,
    "NUMBER(PG_hugetlb)": 8,  # 6.6-6.8: a bit of folio._flags_1, above the order in its low byte
    "OFFSET(pglist_data.node_zones)": 0,
    "OFFSET(pglist_data.nr_zones)": 173504,
    "OFFSET(pglist_data.node_mem_map)": 173512,
    "OFFSET(pglist_data.node_start_pfn)": 173520,
    "OFFSET(pglist_data.node_spanned_pages)": 173536,
    "OFFSET(pglist_data.node_id)": 173544,
    "OFFSET(zone.free_area)": 192,
    "OFFSET(zone.vm_stat)": 1472,
    "OFFSET(zone.spanned_pages)": 96,
    "OFFSET(free_area.free_list)": 0,
    "OFFSET(list_head.next)": 0,
    "OFFSET(list_head.prev)": 8,
    "OFFSET(vmap_area.va_start)": 0,
    "OFFSET(vmap_area.list)": 40,
    "LENGTH(zone.free_area)": 11,
    "LENGTH(free_area.free_list)": 6,
    "NUMBER(NR_FREE_PAGES)": 0,
    "NUMBER(PG_lru)": 4,
    "NUMBER(PG_private)": 13,
    "NUMBER(PG_swapcache)": 10,
    "NUMBER(PG_swapbacked)": 19,
    "NUMBER(PG_slab)": 9,
    "NUMBER(PG_hwpoison)": 23,
    "NUMBER(PG_head_mask)": 65536,
    "NUMBER(HUGETLB_PAGE_DTOR)": 2,
    "LENGTH(node_data)": 1024,
    "NUMBER(KERNEL_IMAGE_SIZE)": 1073741824,
    "NUMBER(sme_mask)": 0,
    # printk, before 5.10
    "SIZE(printk_log)": 16,
    "OFFSET(printk_log.ts_nsec)": 0,
    "OFFSET(printk_log.len)": 8,
    "OFFSET(printk_log.text_len)": 10,
    "OFFSET(printk_log.dict_len)": 12,
    # printk, 3.5-3.10 (the struct was named "log")
    "SIZE(log)": 16,
    "OFFSET(log.ts_nsec)": 0,
    "OFFSET(log.len)": 8,
    "OFFSET(log.text_len)": 10,
    "OFFSET(log.dict_len)": 12,
    # printk, 5.10+
    "SIZE(printk_ringbuffer)": 80,
    "OFFSET(printk_ringbuffer.desc_ring)": 0,
    "OFFSET(printk_ringbuffer.text_data_ring)": 48,
    "OFFSET(printk_ringbuffer.fail)": 72,
    "SIZE(prb_desc_ring)": 48,
    "OFFSET(prb_desc_ring.count_bits)": 0,
    "OFFSET(prb_desc_ring.descs)": 8,
    "OFFSET(prb_desc_ring.infos)": 16,
    "OFFSET(prb_desc_ring.head_id)": 24,
    "OFFSET(prb_desc_ring.tail_id)": 32,
    "SIZE(prb_desc)": 24,
    "OFFSET(prb_desc.state_var)": 0,
    "OFFSET(prb_desc.text_blk_lpos)": 8,
    "SIZE(prb_data_blk_lpos)": 16,
    "OFFSET(prb_data_blk_lpos.begin)": 0,
    "OFFSET(prb_data_blk_lpos.next)": 8,
    "SIZE(printk_info)": 88,
    "OFFSET(printk_info.seq)": 0,
    "OFFSET(printk_info.ts_nsec)": 8,
    "OFFSET(printk_info.text_len)": 16,
    "OFFSET(printk_info.caller_id)": 20,
    "OFFSET(printk_info.dev_info)": 24,
    "SIZE(dev_printk_info)": 64,
    "OFFSET(dev_printk_info.subsystem)": 0,
    "LENGTH(printk_info_subsystem)": 16,
    "OFFSET(dev_printk_info.device)": 16,
    "LENGTH(printk_info_device)": 48,
    "SIZE(prb_data_ring)": 32,
    "OFFSET(prb_data_ring.size_bits)": 0,
    "OFFSET(prb_data_ring.data)": 8,
    "OFFSET(prb_data_ring.head_lpos)": 16,
    "OFFSET(prb_data_ring.tail_lpos)": 24,
    "SIZE(atomic_long_t)": 8,
    "OFFSET(atomic_long_t.counter)": 0,
    "SIZE(latched_seq)": 24,
    "OFFSET(latched_seq.val)": 8,
}


#: Kernel-image symbols of an arm64 build as offsets from ``_text`` (Debian's 6.1.0-57-arm64 under
#: KASLR: each ``SYMBOL()`` of its VMCOREINFO minus ``KIMAGE_VADDR + KERNELOFFSET``; the printk
#: and kallsyms ones likewise).  :func:`vmci.producer.arm64.image` lays them out in a smaller image.
AARCH64_LINK: dict[str, int] = {
    "_text": 0,
    "_stext": 0x10000,
    "linux_banner": 0xD000E8,
    "kallsyms_offsets": 0xEF3C98,
    "kallsyms_relative_base": 0xF24F18,
    "kallsyms_num_syms": 0xF24F20,
    "kallsyms_names": 0xF24F28,
    "kallsyms_token_table": 0xFE58C8,
    "kallsyms_token_index": 0xFE5C10,
    "node_online_map": 0x1CBF568,
    "prb": 0x1CE8750,
    "printk_rb_static": 0x1CE8820,
    "vmap_area_list": 0x1D8C478,
    "init_uts_ns": 0x1F1C030,
    "clear_seq": 0x1F82600,
    "mem_map": 0x1F90000,
    "contig_page_data": 0x1F90040,
}

#: SIZE/OFFSET/NUMBER values that differ on that arm64 build (the rest as :data:`DEFAULT_VALUES`).
AARCH64_VALUES: dict[str, int] = {
    "LENGTH(mem_section)": 16384,
    "SIZE(mem_section)": 32,
    "SIZE(pglist_data)": 11392,
    "SIZE(zone)": 1728,
    "SIZE(nodemask_t)": 8,
    "OFFSET(pglist_data.nr_zones)": 8992,
    "OFFSET(pglist_data.node_mem_map)": 8992 + 8,
    "OFFSET(pglist_data.node_start_pfn)": 9000,
    "OFFSET(pglist_data.node_spanned_pages)": 9016,
    "OFFSET(pglist_data.node_id)": 9024,
    "OFFSET(zone.free_area)": 256,
    "OFFSET(zone.vm_stat)": 1536,
    "OFFSET(zone.spanned_pages)": 136,
    "SIZE(printk_ringbuffer)": 88,
    "OFFSET(printk_ringbuffer.fail)": 80,
    "NUMBER(KERNELPACMASK)": 0,
}


@dataclass(frozen=True)
class KernelLayout:
    """What the kernel's VMCOREINFO depends on.  Deterministic: randomness comes from ``seed``."""

    profile: KernelProfile = PROFILES["6.1"]  # or a profile name
    osrelease: str = ""  # "": the profile's typical release
    build_id: str | None = None  # 40 hex digits; None: derived from seed
    seed: int = 0
    page_size: int = 4096
    kaslr_offset: int = 0x2A000000  # KERNELOFFSET
    phys_base: int = -346030080  # as seen on Debian guests; may be negative
    pgtable_l5: bool = False
    numa: bool = True
    symbols: Mapping[str, int] = field(default_factory=dict)  # link-address overrides
    values: Mapping[str, int] = field(default_factory=dict)  # SIZE/OFFSET/... overrides, by key
    page_offset_base: int | None = None  # direct map base (None: the non-randomized default)
    vmalloc_start: int | None = None
    vmemmap_base: int | None = None
    mem_section_paddr: int = 0x13FFD6000  # where the mem_section root array lives
    extra_lines: Sequence[str] = ()  # appended after the arch keys, each through the 80-byte buffer
    arch: str = "x86_64"  # or "aarch64": then phys_base is PHYS_OFFSET and the image lies at text_pa
    va_bits: int = 48  # aarch64: CONFIG_ARM64_VA_BITS
    text_pa: int = 0x40200000  # aarch64: where _text is loaded (QEMU virt's -kernel address)

    def __post_init__(self) -> None:
        if isinstance(self.profile, str):
            object.__setattr__(self, "profile", profile(self.profile))
        if not self.osrelease:
            release = self.profile.osrelease
            object.__setattr__(self, "osrelease", release.replace("amd64", "arm64") if self.arch == "aarch64"
                               else release)
        if self.page_size <= 0 or self.page_size & (self.page_size - 1):
            raise UsageError(f"page size {self.page_size} is not a power of two")
        if self.build_id is not None and (len(self.build_id) != 40 or not _is_hex(self.build_id)):
            raise UsageError(f"build id {self.build_id!r} is not 40 hex digits")

    @property
    def build_id_hex(self) -> str:
        if self.build_id is not None:
            return self.build_id.lower()
        return random.Random(self.seed).randbytes(20).hex()

    @property
    def vmcoreinfo_bytes(self) -> int:
        """``VMCOREINFO_BYTES``: PAGE_SIZE since 4.13, a fixed 4096 before."""
        return self.page_size if self.profile.since(4, 13) else 4096

    @property
    def note_size(self) -> int:
        """``VMCOREINFO_NOTE_SIZE``."""
        return vmcoreinfo_note_size(self.vmcoreinfo_bytes)

    @property
    def buffers_page_aligned(self) -> bool:
        """Since 4.13 both buffers are page allocations; before they were .bss arrays."""
        return self.profile.since(4, 13)

    def link(self, name: str) -> int:
        try:
            if self.arch == "aarch64":
                return self.symbols.get(name) or kimage_vaddr(self.va_bits) + AARCH64_LINK[name]
            return self.symbols.get(name) or DEFAULT_LINK[name]
        except KeyError:
            raise UsageError(f"no link address for kernel symbol {name!r}") from None

    @property
    def kimage_voffset(self) -> int:
        """arm64: ``VA - PA`` of the image (``KIMAGE_VADDR + KERNELOFFSET - PA(_text)``)."""
        return (kimage_vaddr(self.va_bits) + self.kaslr_offset - self.text_pa) & (2**64 - 1)

    def runtime(self, name: str) -> int:
        """The KASLR-shifted address ``SYMBOL(name)`` shows for an image symbol."""
        return (self.link(name) + self.kaslr_offset) & (2**64 - 1)

    def kernel_paddr(self, vaddr: int) -> int:
        """Physical address of a kernel-image virtual address (``__pa_symbol``)."""
        if self.arch == "aarch64":
            return (vaddr - self.kimage_voffset) & (2**64 - 1)
        return vaddr - START_KERNEL_MAP + self.phys_base

    def value(self, key: str) -> int:
        if key in self.values:
            return self.values[key]
        if key == "OFFSET(uts_namespace.name)":
            return 0 if self.profile.since(5, 11) else 4  # the kref moved out in 5.11
        if key == "NUMBER(MAX_PHYSMEM_BITS)":
            if self.arch == "aarch64":
                return 52 if self.va_bits == 52 else 48
            return 52 if self.pgtable_l5 else 46
        if key == "NUMBER(SECTION_SIZE_BITS)" and self.arch == "aarch64":
            return 29 if self.page_size == 65536 else 27
        if key == "LENGTH(mem_section)" and self.arch == "aarch64":
            # NR_SECTION_ROOTS = NR_MEM_SECTIONS / SECTIONS_PER_ROOT, the latter PAGE_SIZE /
            # sizeof(struct mem_section) (include/linux/mmzone.h): it follows the granule
            sections = 1 << (self.value("NUMBER(MAX_PHYSMEM_BITS)") - self.value("NUMBER(SECTION_SIZE_BITS)"))
            return -(-sections // (self.page_size // self.value("SIZE(mem_section)")))
        if self.arch == "aarch64" and key in AARCH64_VALUES:
            return AARCH64_VALUES[key]
        return DEFAULT_VALUES[key]

    @property
    def direct_map(self) -> int:
        """The linear-map address of physical 0 (x86_64 ``page_offset_base``; arm64
        ``PAGE_OFFSET - PHYS_OFFSET``, so that it plus a RAM address is that address's ``__va``)."""
        if self.page_offset_base is not None:
            return self.page_offset_base
        if self.arch == "aarch64":
            return (arm64_page_offset(self.va_bits) - self.phys_base) & (2**64 - 1)
        return 0xFF11000000000000 if self.pgtable_l5 else 0xFFFF888000000000

    @property
    def vmalloc(self) -> int:
        if self.vmalloc_start is not None:
            return self.vmalloc_start
        if self.arch == "aarch64":
            return kimage_vaddr(self.va_bits)  # VMALLOC_START = MODULES_END
        return 0xFFA0000000000000 if self.pgtable_l5 else 0xFFFFC90000000000

    @property
    def vmemmap(self) -> int:
        if self.vmemmap_base is not None:
            return self.vmemmap_base
        if self.arch == "aarch64":
            return vmemmap_start(self.va_bits, self.page_size.bit_length() - 1)
        return 0xFFD4000000000000 if self.pgtable_l5 else 0xFFFFEA0000000000

    @property
    def mem_map_base(self) -> int:
        """The kernel's ``vmemmap`` pointer, the ``struct page`` of PFN 0 (the encoded
        ``section_mem_map`` of every section): x86_64's ``vmemmap_base``; arm64 offsets
        ``VMEMMAP_START`` by ``PHYS_OFFSET``'s PFN."""
        if self.arch == "aarch64" and self.vmemmap_base is None:
            return arm64_vmemmap(self.va_bits, self.page_size.bit_length() - 1, self.phys_base & (2**64 - 1),
                                 self.value("SIZE(page)"))
        return self.vmemmap


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)
