"""The actors of an arm64 guest on QEMU's ``virt`` machine, as :func:`vmci.producer.build.build`
runs them for ``arch = "aarch64"``.

1. guest RAM from 1 GiB (:mod:`vmci.machine.aarch64_virt`); no firmware: QEMU loads the Image
   with ``-kernel`` at RAM + 2 MiB and boots it with a device tree (no ACPI);
2. QEMU: the upstream vmcoreinfo device's ``etc/vmcoreinfo`` fw_cfg file (``virt``'s fw_cfg at
   0x09020000 has DMA), or no device;
3. guest Linux: KASLR (``KERNELOFFSET``, a multiple of 2 MiB in the range ``kaslr_early_init``
   draws from, and the linear-map randomisation of ``PHYS_OFFSET`` that ``arm64_memblock_init``
   applies when the linear region is larger than the CPU's physical range: cortex-a57's 44
   bits), ``swapper_pg_dir`` and the image's mappings (:mod:`.pagetables_arm64`),
   ``vmcoreinfo_note``/``vmcoreinfo_data`` in page-allocator memory, ``init_uts_ns``, the banner,
   vCPUs idle at EL1 (and, with KPTI, one at EL0 holding ``tramp_pg_dir``);
4. the guest driver (``qemu_fw_cfg``) writes the 16-byte record;
5. the faults of each stage.

Image geometries (:data:`IMAGES`) follow Debian's 6.1 arm64 kernel (``full``, 32 MiB) or squeeze
its parts into 8 MiB (``compact``).  A 5.10 profile keeps ``[_text, _stext)`` and the Image header
mapped (before Linux 5.11 the header page was part of the permanent mapping).
"""

from __future__ import annotations

import random

from vmci.arch.aarch64.consts import (
    IMAGE_MAGIC,
    IMAGE_MAGIC_OFFSET,
    MIN_KIMG_ALIGN,
    SEGMENT_ALIGN,
    kimage_vaddr,
    page_end,
    page_offset,
    va_bits_min,
)
from vmci.core.memory import Range
from vmci.errors import UsageError
from vmci.machine.aarch64_virt import KERNEL_LOAD
from vmci.producer import faults as fault_mod
from vmci.producer.allocator import PageAllocator
from vmci.producer.config import Scenario
from vmci.producer.devices import LinuxFwCfgWriter, UpstreamVmcoreinfoDevice
from vmci.producer.fw_cfg import FwCfg
from vmci.producer.guest import build_memory, virt_layout
from vmci.producer.kernel_layout import AARCH64_LINK, KernelLayout, profile
from vmci.producer.linux import place_vmcoreinfo
from vmci.producer.mm import PageBlock, fill_pages, plan_pages, write_mem_map
from vmci.producer.pagetables_arm64 import Arm64Image, build_arm64_kernel_tables
from vmci.producer.state import Guest

__all__ = ["IMAGES", "PARANGE_BITS", "build_aarch64", "image"]

#: cortex-a57's ID_AA64MMFR0_EL1.PARange under QEMU: 44-bit physical addresses
PARANGE_BITS = 44
_COMPACT = {
    "linux_banner": 0x3400E8, "kallsyms_offsets": 0x400000, "kallsyms_relative_base": 0x431280,
    "kallsyms_num_syms": 0x431288, "kallsyms_names": 0x431290, "kallsyms_token_table": 0x4F1C30,
    "kallsyms_token_index": 0x4F1F78, "node_online_map": 0x610568, "prb": 0x620750,
    "printk_rb_static": 0x620820, "vmap_area_list": 0x640478, "init_uts_ns": 0x700030,
    "clear_seq": 0x720600, "mem_map": 0x730000, "contig_page_data": 0x730040,
}
#: ``full``: Debian's 6.1.0-57-arm64 (from its /proc/iomem and VMCOREINFO); ``compact``: 8 MiB
IMAGES: dict[str, Arm64Image] = {
    "full": Arm64Image(size=0x2010000, etext=0xC00000, init_begin=0x1660000, init_end=0x1CB0000,
                       data=0x1CB0000,
                       symbols=dict(AARCH64_LINK)),
    "compact": Arm64Image(size=0x800000, etext=0x300000, init_begin=0x580000, init_end=0x600000,
                          data=0x600000,
                          symbols={"_text": 0, "_stext": SEGMENT_ALIGN, **_COMPACT}),
}
PC_OFFSET = {"full": 0x9DA26C, "compact": 0x1DA26C}  # an idle vCPU's PC (cpu_do_idle), from _text


def image(kind: str) -> Arm64Image:
    """The image geometry ``full`` or ``compact``."""
    try:
        return IMAGES[kind]
    except KeyError:
        raise UsageError(f"image is one of {', '.join(IMAGES)}, not {kind!r}") from None


def _kaslr(s: Scenario, va_bits: int, rng: random.Random) -> int:
    """``KERNELOFFSET``: ``BIT(VA_BITS_MIN - 3) + (seed & (BIT(VA_BITS_MIN - 2) - 1))``, 2 MiB-aligned
    (``kaslr_early_init``, head.S); 0 with ``nokaslr``."""
    if s.kaslr_offset is not None:
        if s.kaslr_offset % MIN_KIMG_ALIGN:
            raise UsageError("an arm64 kaslr_offset is a multiple of 2 MiB")
        return s.kaslr_offset
    if not s.kaslr:
        return 0
    vmin = va_bits_min(va_bits)
    return (1 << (vmin - 3)) + rng.randrange((1 << (vmin - 2)) // MIN_KIMG_ALIGN) * MIN_KIMG_ALIGN


def _phys_offset(s: Scenario, va_bits: int, ram_start: int, ram_size: int, rng: random.Random) -> int:
    """``PHYS_OFFSET`` (``memstart_addr``): the RAM start rounded down to ``ARM64_MEMSTART_ALIGN``
    (1 GiB, 512 MiB with 64 KiB pages), lowered by a random multiple of it under KASLR when the
    linear region exceeds the physical range (``arm64_memblock_init``)."""
    align = (512 << 20) if s.page_size == 65536 else (1 << 30)
    base = ram_start & ~(align - 1)
    if s.phys_base is not None:
        return s.phys_base & ((1 << 64) - 1)
    linear = page_end(va_bits) - page_offset(va_bits)
    span = linear - (1 << PARANGE_BITS)
    if not s.kaslr or span < align:
        return base
    steps = span // align
    seed = rng.randrange(1, 1 << 16)
    value = base - align * ((steps * seed) >> 16)
    if value + linear < ram_start + ram_size:  # the RAM must stay inside the linear map
        value = base
    return value & ((1 << 64) - 1)


def build_aarch64(s: Scenario) -> Guest:
    """Run every actor of the arm64 scenario ``s`` and return the guest, ready for a dump writer."""
    rng = random.Random(s.seed)
    layout = virt_layout(s.ram)
    g = Guest(s, rng, layout, build_memory(layout, seed=s.seed), s.device, s.rfc_offset)
    fault_mod.apply(g, "machine")
    if g.device_kind == "upstream":
        g.vmcoreinfo_device = UpstreamVmcoreinfoDevice()
    elif g.device_kind != "none":
        raise UsageError(f"an aarch64 virt guest has the upstream vmcoreinfo device or none, "
                         f"not {g.device_kind!r}")
    fault_mod.apply(g, "qemu-device")
    g.fw_cfg = FwCfg()
    if g.vmcoreinfo_device is not None:
        g.vmcoreinfo_device.add_fw_cfg(g.fw_cfg)
    alloc = g.alloc = PageAllocator(layout.ram_ranges(), rng)
    _boot_linux(g, alloc)
    fault_mod.apply(g, "guest-kernel")
    fault_mod.apply(g, "guest-driver")
    dev = g.vmcoreinfo_device
    if isinstance(dev, UpstreamVmcoreinfoDevice):
        scratch = alloc.take(s.page_size, s.page_size, what="fw_cfg DMA buffer")
        d = g.driver
        # the driver as Linux writes it; a fault may have changed what it writes (same DMA path)
        LinuxFwCfgWriter(g.fw_cfg, g.mem, scratch).write(d["paddr"], d["size"], d["guest_format"])
    if s.mem_map:
        _memory_map(g, alloc)
    fault_mod.apply(g, "after-boot")
    return g


def _memory_map(g: Guest, alloc: PageAllocator) -> None:
    """The kernel's memory map (``Scenario.mem_map``): ``mem_section`` and the ``struct page``
    arrays at arm64's ``vmemmap``, mapped in ``swapper_pg_dir``, then the rest of RAM given out as
    free, cache, user, slab, ... pages of the guest's granule (:mod:`vmci.producer.mm`)."""
    s, tables, kernel = g.scenario, g.arm_tables, g.kernel
    assert tables is not None and kernel is not None
    page = s.page_size

    def map_range(va: int, pa: int, size: int, max_page: int) -> None:
        tables.builder.map_range(tables.root, va, pa, size, max_page=max_page, xn=True)

    def take(size: int, align: int, what: str) -> int:
        return alloc.take(size, align, what=what)

    def plan() -> list[PageBlock]:
        return plan_pages(alloc.free, g.rng, page_size=page)

    g.mem_map = write_mem_map(g.mem, kernel, map_range, take, g.layout.ram_ranges(), plan,
                              byteorder=s.byteorder)
    tables.flush()
    fill_pages(g.mem, g.mem_map.blocks, g.rng, page)


def _boot_linux(g: Guest, alloc: PageAllocator) -> None:
    s, rng = g.scenario, g.rng
    va_bits, page = s.va_bits, s.page_size
    img = image(s.image_kind)
    text_pa = KERNEL_LOAD
    alloc.claim(Range(text_pa, img.size), "kernel image")
    kaslr = _kaslr(s, va_bits, rng)
    ram = g.layout.ram_ranges()
    phys_offset = _phys_offset(s, va_bits, ram[0].start, g.layout.ram_size, rng)
    if "stale-note" in s.faults or s.panic:  # crashkernel=: where a kdump kernel would be loaded
        size = img.size + 2 * MIN_KIMG_ALIGN
        g.crashkernel = Range(alloc.take(size, MIN_KIMG_ALIGN, what="crashkernel reservation"), size)
    pool_size = max(0x100000, 48 * page)
    pool = Range(alloc.take(pool_size, page, what="page-table pool"), pool_size)
    mem_section = alloc.take(page, page, what="mem_section")
    old_layout = not profile(s.kernel).since(5, 11)
    base = kimage_vaddr(va_bits)
    symbols = {name: base + off for name, off in img.symbols.items()}
    symbols["swapper_pg_dir"] = base + img.init_begin - page  # the last page before __init_begin
    kernel = g.kernel = KernelLayout(
        profile=profile(s.kernel), osrelease=s.osrelease, seed=s.seed, page_size=page, kaslr_offset=kaslr,
        phys_base=phys_offset, symbols=symbols, mem_section_paddr=mem_section, arch="aarch64",
        va_bits=va_bits, text_pa=text_pa)
    tables = g.arm_tables = build_arm64_kernel_tables(
        g.mem, pool, image=img, text_pa=text_pa, kaslr_offset=kaslr, phys_offset=phys_offset,
        page_shift=page.bit_length() - 1, va_bits=va_bits, byteorder=s.byteorder, kpti=s.pti,
        pc_offset=PC_OFFSET[s.image_kind], map_header=old_layout)
    if old_layout:  # before 5.11 the Image header stays mapped and reserved: its magic survives
        g.mem.write(text_pa + IMAGE_MAGIC_OFFSET, IMAGE_MAGIC)
    note_pages = -(-kernel.note_size // page) * page
    note = alloc.take(note_pages, page, what="vmcoreinfo_note")
    data = alloc.take(kernel.vmcoreinfo_bytes, page, what="vmcoreinfo_data")
    crashtime = None
    if s.panic:
        crashtime = s.crashtime if s.crashtime is not None else 1_700_000_000 + s.seed % 100_000_000
    g.placed_vmcoreinfo = place_vmcoreinfo(g.mem, kernel, note, data, crashtime=crashtime, write_uts=True,
                                           byteorder=s.byteorder)
    banner_va = kernel.runtime("linux_banner")
    text = (f"Linux version {kernel.osrelease} (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) "
            f"12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Debian\n").encode()
    banner_pa = tables.kernel_phys(banner_va)
    g.mem.write(banner_pa, text + b"\0")
    g.banner = (banner_va, banner_pa, text)
    g.cpus = [tables.cpu_state(i, user=s.pti and i == 1 and not s.panic) for i in range(s.cpus)]
    for c in g.cpus:
        c.crash_occurred = s.panic and c.index == 0
    g.image = {"image_size": img.size}
    tables.flush()
    g.driver = {"version": 0, "paddr": note, "size": kernel.note_size, "guest_format": 1}
