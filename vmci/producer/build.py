"""Run the actors of a :class:`~vmci.producer.config.Scenario` in the order they act on a real VM.

1. guest RAM (:mod:`.guest`);
2. QEMU: the vmcoreinfo device (RFC or upstream), vmgenid, ACPI tables and the linker script;
3. firmware (SeaBIOS or OVMF) runs ``etc/table-loader``: allocations, pointers, checksums and the
   WRITE_POINTER that fills the saved address blob; it hands the OS its ACPI tables;
4. guest Linux: the kernel image at its KASLR'd place with ``init_uts_ns`` and ``linux_banner``,
   page tables, ``vmcoreinfo_note``/``vmcoreinfo_data`` in page-allocator memory, vCPU state;
5. the guest driver writes version/paddr/size at page + 40 (RFC) or the 16-byte record (upstream);
6. the faults of each stage (:mod:`.faults`) right after their actor.

Everything random comes from ``random.Random(seed)``: the same scenario gives the same guest.
The dump writers and the truth read the resulting :class:`~vmci.producer.state.Guest`.
"""

from __future__ import annotations

import random
import uuid

from vmci.arch.x86_64.consts import DEFAULT_TEXT, START_KERNEL_MAP
from vmci.core.memory import PAGE_SIZE, Range
from vmci.errors import UsageError
from vmci.layouts.fw_cfg import VmcoreinfoRfcContent
from vmci.producer import faults as fault_mod
from vmci.producer.acpi_tables import build_acpi, install_acpi
from vmci.producer.allocator import PageAllocator
from vmci.producer.arm64 import build_aarch64
from vmci.producer.config import Scenario
from vmci.producer.devices import (
    LinuxFwCfgWriter,
    RfcGuestDriver,
    RfcVmcoreinfoDevice,
    UpstreamVmcoreinfoDevice,
    VmgenidDevice,
    evaluate_addr,
)
from vmci.producer.firmware import Firmware
from vmci.producer.fw_cfg import FwCfg
from vmci.producer.guest import build_memory, guest_layout
from vmci.producer.kernel_layout import DEFAULT_LINK, PHYSICAL_START, KernelLayout, profile
from vmci.producer.linux import place_vmcoreinfo
from vmci.producer.mm import DEFAULT_MIX, PageBlock, fill_pages, plan_pages, write_mem_map
from vmci.producer.pagetables import build_kernel_page_tables
from vmci.producer.printk import boot_log, consistent_values, panic_log, target_for, write_printk_log
from vmci.producer.state import Guest

__all__ = ["IMAGES", "build", "compact_symbols"]

MB2 = 0x200000
#: The printk variables, contiguous in a real image's .data (from ``prb`` on).
PRINTK_VARIABLES = ("prb", "printk_rb_static", "clear_seq", "log_buf", "log_buf_len", "log_first_idx",
                    "clear_idx", "log_next_idx", "log_end", "logged_chars")
_RODATA = 0xFFFFFFFF82000000
IMAGES: dict[str, dict[str, int]] = {
    "full": {"image_size": 0x2000000, "text_size": 0x1000000, "idt_offset": 0x1C04000,
             "handler_offset": 0xA00A10, "rip_offset": 0x9F3B2E, "banner": 0xFFFFFFFF82000100,
             "bss_offset": 0x1E81230},
    "compact": {"image_size": 0x800000, "text_size": 0x200000, "idt_offset": 0x700000,
                "handler_offset": 0x100A10, "rip_offset": 0xF3B2E, "banner": 0xFFFFFFFF81200100,
                "bss_offset": 0x781230},
}


def compact_symbols() -> dict[str, int]:
    """Link addresses squeezed into an 8 MiB image: rodata/data offsets divided by 4."""
    out = {}
    for name, addr in DEFAULT_LINK.items():
        if addr >= _RODATA:
            off = (addr - _RODATA) // 4 & ~7
            if name == "swapper_pg_dir":
                off &= ~0x1FFF  # an 8 KiB-aligned PGD pair (PTI)
            out[name] = DEFAULT_TEXT + 0x200000 + off
    return out


def _kaslr_placement(s: Scenario, image: dict[str, int], alloc: PageAllocator,
                     rng: random.Random) -> tuple[int, int, int]:
    """(kaslr_offset, phys_base, text_pa): virtual and physical randomisation are independent,
    phys_base = text_pa - CONFIG_PHYSICAL_START - kaslr_offset (often negative)."""
    size = image["image_size"]
    max_off = (0x40000000 - (DEFAULT_TEXT - START_KERNEL_MAP) - size) // MB2
    if s.kaslr_offset is not None and s.phys_base is not None:
        kaslr, pb = s.kaslr_offset, s.phys_base
        text_pa = PHYSICAL_START + kaslr + pb
        alloc.claim(Range(text_pa, size), "kernel image")
        return kaslr, pb, text_pa
    if not s.kaslr:
        kaslr = s.kaslr_offset or 0
        text_pa = PHYSICAL_START if s.phys_base is None else PHYSICAL_START + kaslr + s.phys_base
        alloc.claim(Range(text_pa, size), "kernel image")
        return kaslr, text_pa - PHYSICAL_START - kaslr, text_pa
    kaslr = s.kaslr_offset if s.kaslr_offset is not None else rng.randrange(1, max_off) * MB2
    text_pa = alloc.take(size, MB2, what="kernel image")
    if s.phys_base is not None:
        raise UsageError("phys_base can only be pinned together with kaslr_offset (or with kaslr off)")
    return kaslr, text_pa - PHYSICAL_START - kaslr, text_pa


def build(s: Scenario) -> Guest:
    """Run every actor of ``s`` and return the guest, ready for a dump writer (an arm64 ``virt``
    guest for ``arch = "aarch64"``: :func:`vmci.producer.arm64.build_aarch64`)."""
    if s.arch == "aarch64":
        return build_aarch64(s)
    rng = random.Random(s.seed)
    layout = guest_layout(s.ram, machine=s.machine, firmware=s.firmware, vga_hole=s.vga_hole)
    g = Guest(s, rng, layout, build_memory(layout, seed=s.seed), s.device, s.rfc_offset)
    fault_mod.apply(g, "machine")

    # -- QEMU: devices, ACPI, fw_cfg
    if g.device_kind == "rfc":
        g.vmcoreinfo_device = RfcVmcoreinfoDevice(offset=g.rfc_offset)
    elif g.device_kind == "upstream":
        g.vmcoreinfo_device = UpstreamVmcoreinfoDevice()
    if s.vmgenid:
        guid = s.vmgenid_guid or str(uuid.UUID(bytes=rng.randbytes(16), version=4))
        g.vmgenid_device = VmgenidDevice(guid)
    fault_mod.apply(g, "qemu-device")
    devices = [d for d in (g.vmcoreinfo_device, g.vmgenid_device) if d is not None]
    g.fw_cfg = FwCfg()
    g.acpi = build_acpi([d for d in devices if hasattr(d, "build_acpi")],
                        rsdp_revision=s.rsdp_revision, fadt_revision=s.fadt_revision)
    install_acpi(g.fw_cfg, g.acpi)
    for d in devices:
        d.add_fw_cfg(g.fw_cfg)

    # -- firmware
    # OVMF leaves the top 2 MiB below 4 GiB RAM to itself; SeaBIOS' ZoneHigh starts at the top
    top = layout.below_4g if s.firmware == "seabios" else max(layout.below_4g - MB2, PAGE_SIZE)
    fw = Firmware(g.mem, g.fw_cfg, flavor=s.firmware, high_top=top, acpi=g.acpi)
    g.firmware = fw.run()
    g.acpi_tables = g.firmware.acpi.copy() if g.firmware.acpi is not None else None
    rsdp = g.firmware.rsdp_address
    lowest = min([a.address for a in g.firmware.allocations.values() if a.address >= 0x100000]
                 + [a for _, a in g.firmware.installed]
                 + ([rsdp] if rsdp is not None and rsdp >= 0x100000 else [])
                 + [layout.below_4g])
    alloc = PageAllocator(layout.ram_ranges(), rng)
    alloc.reserve(Range(0, 0x100000))  # real-mode area, BIOS data, F-segment
    lowest &= ~(PAGE_SIZE - 1)
    alloc.reserve(Range(lowest, layout.below_4g - lowest))  # firmware's ACPI and device blobs

    # -- guest Linux
    _boot_linux(g, alloc)
    fault_mod.apply(g, "guest-kernel")

    # -- guest driver
    _run_driver(g, alloc)
    for table_id in ("VMCOREIN", "VMGENID"):
        table = g.acpi_tables.find("SSDT", table_id) if g.acpi_tables else None
        if table is not None:
            g.ssdts[table_id] = table.address
    if s.mem_map:
        _memory_map(g, alloc)
    fault_mod.apply(g, "after-boot")
    return g


def _memory_map(g: Guest, alloc: PageAllocator) -> None:
    """The kernel's memory map: ``mem_section`` and ``struct page`` arrays taken from what is left,
    then the rest of RAM given out as free, cache, user, slab, ... pages (:mod:`vmci.producer.mm`)."""
    assert g.kernel is not None and g.tables is not None
    kinds = [k for k in DEFAULT_MIX if k != "offline" or g.kernel.profile.since(5, 0)]  # PageOffline: 5.0

    def plan() -> list[PageBlock]:
        return plan_pages(alloc.free, g.rng, kinds=kinds)

    def take(size: int, align: int, what: str) -> int:
        return alloc.take(size, align, what=what)

    tables = g.tables

    def map_range(va: int, pa: int, size: int, max_page: int) -> None:
        tables.builder.map_range(tables.pgd, va, pa, size, max_page=max_page, nx=True)

    g.mem_map = write_mem_map(g.mem, g.kernel, map_range, take, g.layout.ram_ranges(), plan)
    tables.flush()
    fill_pages(g.mem, g.mem_map.blocks, g.rng)


def _boot_linux(g: Guest, alloc: PageAllocator) -> None:
    s, rng = g.scenario, g.rng
    kind = s.image_kind
    image = g.image = dict(IMAGES[kind])
    symbols = compact_symbols() if kind == "compact" else {}
    if symbols and s.log:  # the log's variables keep their real spacing (quartered offsets overlap)
        base = DEFAULT_LINK["prb"]
        for name in PRINTK_VARIABLES:
            symbols[name] = symbols["prb"] + DEFAULT_LINK[name] - base
    pinned = not s.kaslr or (s.kaslr_offset is not None and s.phys_base is not None)
    if pinned:
        kaslr, phys_base, text_pa = _kaslr_placement(s, image, alloc, rng)
    if "stale-note" in s.faults or s.panic:  # crashkernel=: where a kdump kernel would be loaded
        size = image["image_size"] + 2 * MB2
        g.crashkernel = Range(alloc.take(size, MB2, what="crashkernel reservation"), size)
    if not pinned:  # a random physical place, after the reservation so small guests fit both
        kaslr, phys_base, text_pa = _kaslr_placement(s, image, alloc, rng)
    pool_size = 0x100000
    pool = Range(alloc.take(pool_size, PAGE_SIZE, what="page-table pool"), pool_size)
    mem_section = alloc.take(PAGE_SIZE, what="mem_section")
    prof = profile(s.kernel)
    # a guest that logs gets a printk_ringbuffer layout of a real build (the profile defaults put
    # ``fail`` inside the text ring, harmless while no log is written and kept for testdata/)
    values = consistent_values(prof) if s.log else {}
    kernel = g.kernel = KernelLayout(profile=prof, osrelease=s.osrelease, seed=s.seed,
                                     kaslr_offset=kaslr, phys_base=phys_base, pgtable_l5=s.la57,
                                     symbols=symbols, mem_section_paddr=mem_section, values=values)
    pgd_offset = kernel.link("swapper_pg_dir") - DEFAULT_TEXT
    g.tables = build_kernel_page_tables(
        g.mem, pool, kaslr_offset=kaslr, phys_base=phys_base, la57=s.la57, image_size=image["image_size"],
        text_size=image["text_size"], pti=s.pti, split_4k=1, pgd_offset=pgd_offset,
        idt_offset=image["idt_offset"], handler_offset=image["handler_offset"],
        rip_offset=image["rip_offset"])
    # the note and text buffers: page allocations since 4.13, .bss arrays before
    if kernel.buffers_page_aligned:
        note = alloc.take(-(-kernel.note_size // PAGE_SIZE) * PAGE_SIZE, what="vmcoreinfo_note")
        data = alloc.take(kernel.vmcoreinfo_bytes, what="vmcoreinfo_data")
    else:
        note = text_pa + image["bss_offset"]
        data = note + (-(-kernel.note_size // 32) * 32)
    crashtime = None
    if s.panic:
        crashtime = s.crashtime if s.crashtime is not None else 1_700_000_000 + s.seed % 100_000_000
    g.placed_vmcoreinfo = place_vmcoreinfo(g.mem, kernel, note, data, crashtime=crashtime, write_uts=True)
    if s.log:  # the kernel's own log, in its version's printk layout (vmci.producer.printk)
        records = boot_log(s.log, seed=s.seed, osrelease=kernel.osrelease, cpus=s.cpus)
        if s.panic:
            records += panic_log(start_ns=records[-1].ts_nsec + 1_000_000, osrelease=kernel.osrelease,
                                 kaslr_offset=kaslr, cause=s.panic_cause)
        g.printk = write_printk_log(g.mem, target_for(kernel, direct_map=g.tables.page_offset), records,
                                    alloc=alloc.take, faults=s.log_faults)
    banner_va = image["banner"] + kaslr
    text = (f"Linux version {kernel.osrelease} (vmci@generator) (gcc (Debian 12.2.0-14) 12.2.0, "
            f"GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian\n").encode()
    banner_pa = g.tables.kernel_phys(banner_va)
    g.mem.write(banner_pa, text + b"\0")
    g.banner = (banner_va, banner_pa, text)
    g.cpus = [g.tables.cpu_state(i) for i in range(s.cpus)]
    for c in g.cpus:
        c.crash_occurred = s.panic and c.index == 0
    g.tables.flush()
    g.driver = {"version": 0, "paddr": note, "size": kernel.note_size, "guest_format": 1}


def _run_driver(g: Guest, alloc: PageAllocator) -> None:
    default = dict(g.driver)
    fault_mod.apply(g, "guest-driver")
    d = g.driver
    dev = g.vmcoreinfo_device
    if isinstance(dev, RfcVmcoreinfoDevice):
        ssdt = g.acpi_tables.find("SSDT", "VMCOREIN") if g.acpi_tables else None
        if ssdt is None:
            raise UsageError("the RFC guest driver found no VMCOREIN SSDT")
        if d == default:
            g.driver_dest = RfcGuestDriver(g.mem).run(d["paddr"], d["size"], g.acpi_tables)
        else:  # a misbehaving driver: same walk, other values
            g.driver_dest = evaluate_addr(g.mem, ssdt.address, "VCIA")
            content = {"version": d["version"], "paddr": d["paddr"], "size": d["size"]}
            g.mem.write(g.driver_dest, VmcoreinfoRfcContent.build(content))
    elif isinstance(dev, UpstreamVmcoreinfoDevice):
        assert g.fw_cfg is not None
        scratch = alloc.take(PAGE_SIZE, what="fw_cfg DMA buffer")
        # the driver as Linux writes it; a fault may have changed what it writes (same DMA path)
        LinuxFwCfgWriter(g.fw_cfg, g.mem, scratch).write(d["paddr"], d["size"], d["guest_format"])


