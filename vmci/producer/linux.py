"""The guest Linux kernel, as far as VMCOREINFO is concerned.

Given a small :class:`KernelLayout` (release, build id, page size, KASLR offset, ``phys_base``,
5-level paging, link addresses, struct offsets) this module writes the VMCOREINFO text the way
``crash_save_vmcoreinfo_init()`` and ``arch_crash_save_vmcoreinfo()`` would: same key order,
same value formats, each line cut by the 80-byte ``vscnprintf`` buffer, the whole capped at
``VMCOREINFO_BYTES``, and ``CRASHTIME`` only when a panic is emulated.  It then lays out the
kernel's two buffers in guest RAM: ``vmcoreinfo_note`` (the ELF note, a trailing empty note,
zeros up to ``VMCOREINFO_NOTE_SIZE``) and ``vmcoreinfo_data`` (the raw text).

Version profiles (:mod:`vmci.producer.kernel_layout`) follow the history of the kernel's
``kernel/crash_core.c`` (``kernel/vmcore_info.c`` since 6.9) and ``arch/x86/kernel/machine_kexec_64.c``:
``SYMBOL(phys_base)`` before 4.10, ``init_level4_pgt`` and .bss buffers before 4.13, ``BUILD-ID``
from 5.9, the lockless-printk keys from 5.10, ``NUMBER(VMALLOC_START)`` instead of
``vmap_area_list`` from 6.7.  Smaller key changes are dated approximately; the profiles are
meant to look like those kernels, not to be byte-exact for one build.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vmci.arch.aarch64.consts import MODULES_VSIZE, kimage_vaddr, vmalloc_end, vmemmap_end, vmemmap_start
from vmci.core.memory import SparseMemory
from vmci.errors import UsageError
from vmci.kernel.vmcoreinfo import KERNEL_LINE_BYTES, build_note
from vmci.producer.kernel_layout import (
    AARCH64_LINK,
    AARCH64_VALUES,
    DEFAULT_LINK,
    DEFAULT_VALUES,
    PHYSICAL_START,
    PROFILES,
    START_KERNEL_MAP,
    KernelLayout,
    KernelProfile,
    profile,
)

__all__ = [
    "AARCH64_LINK", "AARCH64_VALUES", "DEFAULT_LINK", "DEFAULT_VALUES", "PHYSICAL_START", "PROFILES",
    "START_KERNEL_MAP", "KernelLayout",
    "KernelProfile", "PlacedVmcoreinfo", "VmcoreinfoBuffer", "capture_kernel", "new_utsname", "note_buffer",
    "place_vmcoreinfo", "profile", "vmcoreinfo_text",
]


def _mapcount(pgty: int) -> int:
    """``PGTY_x << 24`` evaluated as a C ``int`` and printed with ``%ld`` (negative)."""
    v = (pgty << 24) & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


class VmcoreinfoBuffer:
    """``vmcoreinfo_data`` and ``vmcoreinfo_append_str()``: each line formatted into an 80-byte
    buffer (so at most 79 bytes survive, the newline lost when cut) and the total capped."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = bytearray()

    def append_str(self, line: str) -> None:
        b = line.encode()[:KERNEL_LINE_BYTES]
        self.data += b[: self.capacity - len(self.data)]

    def symbol(self, name: str, addr: int) -> None:
        self.append_str(f"SYMBOL({name})={addr:x}\n")

    def number(self, name: str, value: int) -> None:
        self.append_str(f"NUMBER({name})={value:d}\n")

    def keyed(self, key: str, value: int) -> None:
        """``SIZE/OFFSET/LENGTH/NUMBER`` lines: all decimal (``%lu`` or ``%ld``)."""
        self.append_str(f"{key}={value:d}\n")


def _generic(b: VmcoreinfoBuffer, L: KernelLayout) -> None:
    p = L.profile
    b.append_str(f"OSRELEASE={L.osrelease}\n")
    if p.since(5, 9):
        b.append_str(f"BUILD-ID={L.build_id_hex}\n")
    b.append_str(f"PAGESIZE={L.page_size:d}\n")
    b.symbol("init_uts_ns", L.runtime("init_uts_ns"))
    if p.since(5, 11):
        b.keyed("OFFSET(uts_namespace.name)", L.value("OFFSET(uts_namespace.name)"))
    b.symbol("node_online_map", L.runtime("node_online_map"))
    b.symbol("swapper_pg_dir", L.runtime("swapper_pg_dir"))
    b.symbol("_stext", L.runtime("_stext"))
    if p.since(6, 7):
        b.append_str(f"NUMBER(VMALLOC_START)=0x{L.vmalloc:x}\n")
    else:
        b.symbol("vmap_area_list", L.runtime("vmap_area_list"))
    if not L.numa:
        b.symbol("mem_map", L.runtime("mem_map"))
        b.symbol("contig_page_data", L.runtime("contig_page_data"))
    if p.since(6, 9):
        b.symbol("vmemmap", L.vmemmap)
    # since 4.15 the value of the mem_section pointer (SYMBOL_ARRAY), before that its address
    ms = L.direct_map + L.mem_section_paddr if p.since(4, 15) else L.runtime("mem_section")
    b.symbol("mem_section", ms)
    for key in ("LENGTH(mem_section)", "SIZE(mem_section)", "OFFSET(mem_section.section_mem_map)"):
        b.keyed(key, L.value(key))
    if p.since(5, 13):
        b.keyed("NUMBER(SECTION_SIZE_BITS)", L.value("NUMBER(SECTION_SIZE_BITS)"))
    if p.since(5, 9):
        b.keyed("NUMBER(MAX_PHYSMEM_BITS)", L.value("NUMBER(MAX_PHYSMEM_BITS)"))
    for s in ("page", "pglist_data", "zone", "free_area", "list_head", "nodemask_t"):
        b.keyed(f"SIZE({s})", L.value(f"SIZE({s})"))
    page_fields = ["flags", "_refcount", "mapping", "lru", "_mapcount", "private"]
    if not p.since(6, 3):
        page_fields += ["compound_dtor", "compound_order"]
    for f in [*page_fields, "compound_head"]:
        b.keyed(f"OFFSET(page.{f})", L.value(f"OFFSET(page.{f})"))
    if p.since(6, 3) and not p.since(6, 6):  # "mm: add folio dtor and order setter functions"
        for f in ("_folio_dtor", "_folio_order"):
            b.keyed(f"OFFSET(folio.{f})", L.value(f"OFFSET(folio.{f})"))
    pg = ["node_zones", "nr_zones", *([] if L.numa else ["node_mem_map"]),
          "node_start_pfn", "node_spanned_pages", "node_id"]
    for f in pg:
        b.keyed(f"OFFSET(pglist_data.{f})", L.value(f"OFFSET(pglist_data.{f})"))
    for key in ("OFFSET(zone.free_area)", "OFFSET(zone.vm_stat)", "OFFSET(zone.spanned_pages)",
                "OFFSET(free_area.free_list)", "OFFSET(list_head.next)", "OFFSET(list_head.prev)"):
        b.keyed(key, L.value(key))
    if not p.since(6, 7):
        b.keyed("OFFSET(vmap_area.va_start)", L.value("OFFSET(vmap_area.va_start)"))
        b.keyed("OFFSET(vmap_area.list)", L.value("OFFSET(vmap_area.list)"))
    b.keyed("LENGTH(zone.free_area)", L.value("LENGTH(zone.free_area)"))
    _printk(b, L)
    b.keyed("LENGTH(free_area.free_list)", L.value("LENGTH(free_area.free_list)"))
    _page_numbers(b, L)
    if p.since(6, 0):
        names = ["kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table", "kallsyms_token_index",
                 "kallsyms_offsets", *([] if p.since(6, 11) else ["kallsyms_relative_base"])]
        for name in names:
            b.symbol(name, L.runtime(name))


def _page_numbers(b: VmcoreinfoBuffer, L: KernelLayout) -> None:
    p = L.profile
    for key in ("NUMBER(NR_FREE_PAGES)", "NUMBER(PG_lru)", "NUMBER(PG_private)", "NUMBER(PG_swapcache)"):
        b.keyed(key, L.value(key))
    if p.since(6, 9):
        b.keyed("NUMBER(PG_swapbacked)", L.value("NUMBER(PG_swapbacked)"))
    if p.since(6, 12):
        b.keyed("NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)", L.values.get("NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)",
                                                                 _mapcount(0xF5)))
    else:
        b.keyed("NUMBER(PG_slab)", L.value("NUMBER(PG_slab)"))
    b.keyed("NUMBER(PG_hwpoison)", L.value("NUMBER(PG_hwpoison)"))
    b.keyed("NUMBER(PG_head_mask)", L.value("NUMBER(PG_head_mask)"))
    new = p.since(6, 12)
    b.keyed("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)",
            L.values.get("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)", _mapcount(0xF0) if new else -129))
    if p.since(6, 9):  # "mm: turn folio_test_hugetlb into a PageType" (~PG_hugetlb, then PGTY_hugetlb)
        b.keyed("NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)",
                L.values.get("NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)", _mapcount(0xF4) if new else ~0x800))
    elif p.since(6, 6):
        b.keyed("NUMBER(PG_hugetlb)", L.value("NUMBER(PG_hugetlb)"))
    else:
        b.keyed("NUMBER(HUGETLB_PAGE_DTOR)", L.value("NUMBER(HUGETLB_PAGE_DTOR)"))
    if p.since(5, 0):
        b.keyed("NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)",
                L.values.get("NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)", _mapcount(0xF1) if new else -257))



def _printk(b: VmcoreinfoBuffer, L: KernelLayout) -> None:
    """``log_buf_vmcoreinfo_setup()``."""
    p = L.profile
    if not p.since(3, 5):  # log_buf_kexec_setup(): the plain character ring
        for name in ("log_buf", "log_end", "log_buf_len", "logged_chars"):
            b.symbol(name, L.runtime(name))
        return
    if not p.since(5, 10):
        names = ["log_buf", "log_buf_len", "log_first_idx", *(["clear_idx"] if p.since(4, 19) else []),
                 "log_next_idx"]
        for name in names:
            b.symbol(name, L.runtime(name))
        struct = "printk_log" if p.since(3, 11) else "log"  # "printk: rename struct log to struct printk_log"
        b.keyed(f"SIZE({struct})", L.value(f"SIZE({struct})"))
        fields = ["ts_nsec", "len", "text_len", "dict_len"]
        if f"OFFSET({struct}.caller_id)" in L.values:  # CONFIG_PRINTK_CALLER (5.1+), opt-in
            fields.append("caller_id")
        for f in fields:
            b.keyed(f"OFFSET({struct}.{f})", L.value(f"OFFSET({struct}.{f})"))
        return
    for name in ("prb", "printk_rb_static", "clear_seq"):
        b.symbol(name, L.runtime(name))
    groups = [
        ("printk_ringbuffer", ["desc_ring", "text_data_ring", "fail"]),
        ("prb_desc_ring", ["count_bits", "descs", "infos", "head_id", "tail_id"]),
        ("prb_desc", ["state_var", "text_blk_lpos"]),
        ("prb_data_blk_lpos", ["begin", "next"]),
        ("printk_info", ["seq", "ts_nsec", "text_len", "caller_id", "dev_info"]),
    ]
    for struct, fields in groups:
        b.keyed(f"SIZE({struct})", L.value(f"SIZE({struct})"))
        for f in fields:
            b.keyed(f"OFFSET({struct}.{f})", L.value(f"OFFSET({struct}.{f})"))
    for key in ("SIZE(dev_printk_info)", "OFFSET(dev_printk_info.subsystem)", "LENGTH(printk_info_subsystem)",
                "OFFSET(dev_printk_info.device)", "LENGTH(printk_info_device)", "SIZE(prb_data_ring)",
                "OFFSET(prb_data_ring.size_bits)", "OFFSET(prb_data_ring.data)",
                "OFFSET(prb_data_ring.head_lpos)", "OFFSET(prb_data_ring.tail_lpos)",
                "SIZE(atomic_long_t)", "OFFSET(atomic_long_t.counter)"):
        b.keyed(key, L.value(key))
    if p.since(5, 13):
        b.keyed("SIZE(latched_seq)", L.value("SIZE(latched_seq)"))
        b.keyed("OFFSET(latched_seq.val)", L.value("OFFSET(latched_seq.val)"))


def _arch_x86_64(b: VmcoreinfoBuffer, L: KernelLayout) -> None:
    """``arch_crash_save_vmcoreinfo()`` for x86_64."""
    p = L.profile
    if p.since(4, 10):
        b.number("phys_base", L.phys_base)
    else:
        b.symbol("phys_base", L.runtime("phys_base"))
    b.symbol("init_top_pgt" if p.since(4, 13) else "init_level4_pgt", L.runtime("swapper_pg_dir"))
    if p.since(4, 17):
        b.append_str(f"NUMBER(pgtable_l5_enabled)={int(L.pgtable_l5):d}\n")
    if L.numa:
        b.symbol("node_data", L.runtime("node_data"))
        b.keyed("LENGTH(node_data)", L.value("LENGTH(node_data)"))
    b.append_str(f"KERNELOFFSET={L.kaslr_offset:x}\n")
    b.keyed("NUMBER(KERNEL_IMAGE_SIZE)", L.value("NUMBER(KERNEL_IMAGE_SIZE)"))
    if p.since(4, 14):
        b.keyed("NUMBER(sme_mask)", L.value("NUMBER(sme_mask)"))


def _arch_aarch64(b: VmcoreinfoBuffer, L: KernelLayout) -> None:
    """``arch_crash_save_vmcoreinfo()`` for arm64 (``arch/arm64/kernel/crash_core.c``, 6.1;
    ``vmcore_info.c`` from 6.9): the layout ranges (5.18+), ``kimage_voffset`` and ``PHYS_OFFSET``
    in ``0x%llx``, ``TCR_EL1_T1SZ`` (5.9+), ``KERNELOFFSET`` bare hex, ``KERNELPACMASK`` (5.7+)."""
    p = L.profile
    shift = L.page_size.bit_length() - 1
    b.append_str(f"NUMBER(VA_BITS)={L.va_bits:d}\n")
    if p.since(5, 18):
        modules_end = kimage_vaddr(L.va_bits)
        b.append_str(f"NUMBER(MODULES_VADDR)=0x{modules_end - MODULES_VSIZE:x}\n")
        b.append_str(f"NUMBER(MODULES_END)=0x{modules_end:x}\n")
        if not p.since(6, 9):  # the generic part prints it from 6.9
            b.append_str(f"NUMBER(VMALLOC_START)=0x{L.vmalloc:x}\n")
        b.append_str(f"NUMBER(VMALLOC_END)=0x{vmalloc_end(L.va_bits, shift):x}\n")
        b.append_str(f"NUMBER(VMEMMAP_START)=0x{vmemmap_start(L.va_bits, shift):x}\n")
        b.append_str(f"NUMBER(VMEMMAP_END)=0x{vmemmap_end(L.va_bits, shift):x}\n")
    b.append_str(f"NUMBER(kimage_voffset)=0x{L.kimage_voffset:x}\n")
    b.append_str(f"NUMBER(PHYS_OFFSET)=0x{L.phys_base & (2**64 - 1):x}\n")
    if p.since(5, 9):
        b.append_str(f"NUMBER(TCR_EL1_T1SZ)=0x{64 - L.va_bits:x}\n")
    b.append_str(f"KERNELOFFSET={L.kaslr_offset:x}\n")
    if p.since(5, 7):
        b.append_str(f"NUMBER(KERNELPACMASK)=0x{L.value('NUMBER(KERNELPACMASK)'):x}\n")


def vmcoreinfo_text(layout: KernelLayout, crashtime: int | None = None) -> bytes:
    """The raw VMCOREINFO text as the kernel builds it at boot; with ``crashtime`` (seconds),
    as ``crash_save_vmcoreinfo()`` leaves it after a panic."""
    b = VmcoreinfoBuffer(layout.vmcoreinfo_bytes)
    _generic(b, layout)
    if layout.arch == "aarch64":
        _arch_aarch64(b, layout)
    else:
        _arch_x86_64(b, layout)
    for line in layout.extra_lines:
        b.append_str(line)
    if crashtime is not None:
        b.append_str(f"CRASHTIME={crashtime:d}\n")
    return bytes(b.data)


def note_buffer(text: bytes, note_size: int, byteorder: str = "little") -> bytes:
    """``vmcoreinfo_note``: the note, the 12-byte empty final note, zeros to ``note_size`` (the
    header in the guest's byte order)."""
    note = build_note(text, byteorder) + bytes(12)
    if len(note) > note_size:
        raise UsageError(f"a {len(text)}-byte text does not fit a {note_size}-byte note buffer")
    return note.ljust(note_size, b"\0")


def new_utsname(layout: KernelLayout, nodename: str = "debian",
                version: str = "#1 SMP PREEMPT_DYNAMIC Debian") -> bytes:
    """``struct new_utsname`` (six 65-byte fields) as in ``init_uts_ns.name``."""
    fields = ("Linux", nodename, layout.osrelease, version, layout.arch, "(none)")
    return b"".join(f.encode()[:64].ljust(65, b"\0") for f in fields)


@dataclass(frozen=True)
class PlacedVmcoreinfo:
    """Where :func:`place_vmcoreinfo` put things, and what."""

    layout: KernelLayout
    text: bytes
    note_paddr: int
    data_paddr: int
    note_size: int
    uts_paddr: int | None
    crashtime: int | None

    @property
    def desc_paddr(self) -> int:
        """Physical address of the text inside the note (header 12 + name 12)."""
        return self.note_paddr + 24


def place_vmcoreinfo(
    mem: SparseMemory,
    layout: KernelLayout,
    note_paddr: int,
    data_paddr: int,
    *,
    crashtime: int | None = None,
    write_uts: bool = True,
    byteorder: str = "little",
) -> PlacedVmcoreinfo:
    """Write the kernel's ``vmcoreinfo_note`` and ``vmcoreinfo_data`` buffers into ``mem``.

    Since 4.13 both are page allocations, so the addresses must be page-aligned; older kernels
    kept them in .bss (4-byte aligned).  With ``write_uts`` the kernel's ``init_uts_ns`` is
    written too, at the physical address the text's symbols and ``phys_base`` give, so a
    reader can confirm the text belongs to the kernel in memory.
    """
    align = layout.page_size if layout.buffers_page_aligned else 4
    for what, addr in (("vmcoreinfo_note", note_paddr), ("vmcoreinfo_data", data_paddr)):
        if addr % align:
            raise UsageError(f"{what} at {addr:#x} is not {align}-byte aligned as kernel "
                             f"{layout.profile.name} allocates it")
    note_size = layout.note_size
    if note_paddr < data_paddr + layout.vmcoreinfo_bytes and data_paddr < note_paddr + note_size:
        raise UsageError("vmcoreinfo_note and vmcoreinfo_data overlap")
    text = vmcoreinfo_text(layout, crashtime)
    mem.write(data_paddr, text.ljust(layout.vmcoreinfo_bytes, b"\0"))
    mem.write(note_paddr, note_buffer(text, note_size, byteorder))
    uts_paddr = None
    if write_uts:
        uts_vaddr = layout.runtime("init_uts_ns") + layout.value("OFFSET(uts_namespace.name)")
        uts_paddr = layout.kernel_paddr(uts_vaddr)
        if not mem.contains(uts_paddr, 390):
            raise UsageError(f"init_uts_ns would be at {uts_paddr:#x}, outside guest RAM; "
                             "adjust kaslr_offset/phys_base or pass write_uts=False")
        mem.write(uts_paddr, new_utsname(layout))
    return PlacedVmcoreinfo(layout, text, note_paddr, data_paddr, note_size, uts_paddr, crashtime)


def capture_kernel(layout: KernelLayout, crashkernel_base: int, *,
                   osrelease: str | None = None) -> KernelLayout:
    """The kdump (capture) kernel's layout: booted with ``nokaslr`` inside the crashkernel
    reservation at ``crashkernel_base``, so ``KERNELOFFSET=0`` and ``phys_base`` = the shift."""
    same = osrelease is None or osrelease == layout.osrelease
    return replace(layout, kaslr_offset=0, phys_base=crashkernel_base - PHYSICAL_START,
                   osrelease=osrelease or layout.osrelease, seed=layout.seed + 1,
                   build_id=layout.build_id_hex if same else None)

