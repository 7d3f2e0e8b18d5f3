"""A scenario wires the actors, in the order they act on a real VM, and writes a dump plus its truth.

1. guest RAM (:mod:`.guest`);
2. QEMU: the vmcoreinfo device (RFC or upstream), vmgenid, ACPI tables and the linker script;
3. firmware (SeaBIOS or OVMF) runs ``etc/table-loader``: allocations, pointers, checksums and the
   WRITE_POINTER that fills the saved address blob;
4. guest Linux: the kernel image at its KASLR'd place with ``init_uts_ns`` and ``linux_banner``,
   page tables, ``vmcoreinfo_note``/``vmcoreinfo_data`` in page-allocator memory, vCPU state;
5. the guest driver writes version/paddr/size at page + 40 (RFC) or the 16-byte record (upstream);
6. QEMU's dump writer (:mod:`.qemu_dump`) or a kdump kernel's ``/proc/vmcore``.

Everything random comes from ``random.Random(seed)``: the same scenario gives the same bytes.

Scenario keys (Python fields and TOML keys alike; a TOML file may put them under ``[scenario]``):

=================  ===========================================================================
``seed``           int, default 0
``ram``            bytes, or a string such as ``"32M"``/``"16G"`` (default 256 MiB)
``machine``        ``"q35"`` (default) or ``"pc"``
``firmware``       ``"seabios"`` (default) or ``"ovmf"``
``device``         ``"rfc"`` (default, the seed's device), ``"upstream"`` or ``"none"``
``rfc_offset``     40 (default) or 36
``vmgenid``        bool; ``vmgenid_guid`` a UUID string (default: from the seed)
``kernel``         profile ``"4.9"``, ``"4.19"``, ``"5.10"``, ``"6.1"`` (default), ``"6.9"``, ``"6.12"``
``osrelease``      release string (default: the profile's)
``kaslr``          bool (default true); ``kaslr_offset``/``phys_base`` ints pin them
``la57``, ``pti``  5-level paging, page-table isolation (default false)
``cpus``           vCPUs (default 2)
``panic``          the kernel panicked: CRASHTIME in the text (forced for ``kexec``); ``crashtime``
``rsdp_revision``  0 (default, as QEMU builds) or 2; ``fadt_revision`` 1 (default) or 3
``vga_hole``       leave 0xA0000-0xBFFFF out of RAM (default false)
``image``          kernel image ``"full"`` (32 MiB, real link addresses), ``"compact"`` (8 MiB) or
                   ``"auto"`` (compact below 128 MiB of RAM)
``faults``         list of fault names (:data:`vmci.producer.faults.FAULTS`)
``phys_base_bug``  reproduce QEMU's hexadecimal phys_base parse in kdump headers (default true)
``qemu_version``   ``"7.2"`` (default: section headers first, ``e_ehsize`` 8) or e.g. ``"7.1"``
=================  ===========================================================================
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import uuid
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vmci.arch.x86_64.consts import DEFAULT_TEXT, PHYSICAL_START, START_KERNEL_MAP
from vmci.core.dump import CpuState
from vmci.core.memory import PAGE_SIZE, Range, SparseMemory
from vmci.errors import UsageError
from vmci.firmware import acpi as reader
from vmci.layouts.fw_cfg import FwCfgVmcoreinfo, VmcoreinfoRfcContent
from vmci.machine.qemu_devices import RFC_OFFSETS
from vmci.producer import faults as fault_mod
from vmci.producer.acpi_tables import AcpiBuild, build_acpi, install_acpi
from vmci.producer.devices import (
    LinuxFwCfgWriter,
    RfcGuestDriver,
    RfcVmcoreinfoDevice,
    UpstreamVmcoreinfoDevice,
    VmgenidDevice,
    evaluate_addr,
)
from vmci.producer.firmware import Firmware, FirmwareResult
from vmci.producer.fw_cfg import FwCfg, dma_write_file
from vmci.producer.guest import GuestLayout, build_memory, guest_layout
from vmci.producer.linux import (
    DEFAULT_LINK,
    KernelLayout,
    PlacedVmcoreinfo,
    place_vmcoreinfo,
    profile,
)
from vmci.producer.pagetables import KernelTables, build_kernel_page_tables

FORMATS = ("elf", "elf-paging", "kdump", "kdump-flat", "kexec", "raw")
MB2 = 0x200000
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


def parse_size(value: int | str) -> int:
    if isinstance(value, int):
        return value
    t = value.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    try:
        return int(t[:-1] if mult > 1 else t, 0) * mult
    except ValueError:
        raise UsageError(f"not a size: {value!r} (use e.g. 268435456, '256M', '16G')") from None


@dataclass(frozen=True)
class Scenario:
    """What to build; see the module docstring for every key."""

    seed: int = 0
    ram: int = 256 << 20
    machine: str = "q35"
    firmware: str = "seabios"
    device: str = "rfc"
    rfc_offset: int = 40
    vmgenid: bool = False
    vmgenid_guid: str | None = None
    kernel: str = "6.1"
    osrelease: str = ""
    kaslr: bool = True
    kaslr_offset: int | None = None
    phys_base: int | None = None
    la57: bool = False
    pti: bool = False
    cpus: int = 2
    panic: bool = False
    crashtime: int | None = None
    rsdp_revision: int = 0
    fadt_revision: int = 1
    vga_hole: bool = False
    image: str = "auto"
    faults: tuple[str, ...] = ()
    phys_base_bug: bool = True
    qemu_version: str = "7.2"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ram", parse_size(self.ram))
        object.__setattr__(self, "faults", tuple(self.faults))
        fault_mod.check(self.faults)
        choices = {"machine": ("q35", "pc"), "firmware": ("seabios", "ovmf"),
                   "device": ("rfc", "upstream", "none"), "image": ("auto", "full", "compact")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise UsageError(f"{key} is one of {', '.join(allowed)}, not {getattr(self, key)!r}")
        if self.rfc_offset not in RFC_OFFSETS:
            raise UsageError(f"rfc_offset is 40 or 36, not {self.rfc_offset}")
        if not 1 <= self.cpus <= 64:
            raise UsageError(f"cpus must be 1..64, not {self.cpus}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        data = dict(data.get("scenario", data))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown scenario key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            try:
                import tomli as tomllib
            except ModuleNotFoundError:
                raise UsageError("reading TOML needs Python 3.11 or the tomli package") from None
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise UsageError(f"cannot read scenario {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"scenario {path} is not valid TOML: {e}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["faults"] = list(self.faults)
        return out

    @property
    def image_kind(self) -> str:
        if self.image != "auto":
            return self.image
        return "compact" if self.ram < (128 << 20) else "full"


class PageAllocator:
    """Free guest RAM the kernel may use; random, aligned picks (the page allocator's effect)."""

    def __init__(self, free: list[Range], rng: random.Random) -> None:
        self.free = sorted(free)
        self.rng = rng

    def reserve(self, r: Range) -> None:
        from vmci.producer.qemu_dump import subtract

        self.free = subtract(self.free, [r])

    def claim(self, r: Range, what: str) -> None:
        """Reserve ``r``, which must be free (a pinned placement)."""
        if not any(f.start <= r.start and r.end <= f.end for f in self.free):
            raise UsageError(f"the {what} at {r} is not free guest RAM (firmware, low memory or outside RAM)")
        self.reserve(r)

    def take(self, size: int, align: int = PAGE_SIZE, *, what: str) -> int:
        slots = []
        for r in self.free:
            lo = -(-r.start // align) * align
            n = (r.end - size - lo) // align + 1 if r.end - size >= lo else 0
            if n > 0:
                slots.append((lo, n))
        total = sum(n for _, n in slots)
        if not total:
            raise UsageError(f"guest RAM too small for the {what} ({size:#x} bytes)")
        k = self.rng.randrange(total)
        for lo, n in slots:
            if k < n:
                addr = lo + k * align
                self.reserve(Range(addr, size))
                return addr
            k -= n
        raise AssertionError("unreachable")


@dataclass
class Guest:
    """Every actor's result: the state a dump is written from, and the truth."""

    scenario: Scenario
    rng: random.Random
    layout: GuestLayout
    mem: SparseMemory
    device_kind: str
    rfc_offset: int
    vmcoreinfo_device: Any = None
    vmgenid_device: VmgenidDevice | None = None
    fw_cfg: FwCfg | None = None
    acpi: AcpiBuild | None = None
    firmware: FirmwareResult | None = None
    kernel: KernelLayout | None = None  # set by the guest-Linux step of build()
    image: dict[str, int] = field(default_factory=dict)
    tables: KernelTables | None = None
    placed: PlacedVmcoreinfo = None  # type: ignore[assignment]
    stale: PlacedVmcoreinfo | None = None
    crashkernel: Range | None = None
    cpus: list[CpuState] = field(default_factory=list)
    banner: tuple[int, int, bytes] | None = None  # (vaddr, paddr, text)
    driver: dict[str, int] = field(default_factory=dict)
    driver_dest: int | None = None
    ssdts: dict[str, int] = field(default_factory=dict)  # OEM table id -> address, before after-boot faults
    faults: list[dict[str, str]] = field(default_factory=list)


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
    """Run every actor of ``s`` and return the guest, ready for a dump writer."""
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
    fw = Firmware(g.mem, g.fw_cfg, flavor=s.firmware, high_top=top)
    g.firmware = fw.run()
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
        table, _ = reader.find_ssdt(g.mem, table_id)
        if table is not None:
            g.ssdts[table_id] = table.address
    fault_mod.apply(g, "after-boot")
    return g


def _boot_linux(g: Guest, alloc: PageAllocator) -> None:
    s, rng = g.scenario, g.rng
    kind = s.image_kind
    image = g.image = dict(IMAGES[kind])
    symbols = compact_symbols() if kind == "compact" else {}
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
    kernel = g.kernel = KernelLayout(profile=profile(s.kernel), osrelease=s.osrelease, seed=s.seed,
                                     kaslr_offset=kaslr, phys_base=phys_base, pgtable_l5=s.la57,
                                     symbols=symbols, mem_section_paddr=mem_section)
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
    g.placed = place_vmcoreinfo(g.mem, kernel, note, data, crashtime=crashtime, write_uts=True)
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
        ssdt, _ = reader.find_ssdt(g.mem, "VMCOREIN")
        if ssdt is None:
            raise UsageError("the RFC guest driver found no VMCOREIN SSDT")
        if d == default:
            g.driver_dest = RfcGuestDriver(g.mem).run(d["paddr"], d["size"], ssdt)
        else:  # a misbehaving driver: same walk, other values
            g.driver_dest = evaluate_addr(ssdt, "VCIA")
            content = {"version": d["version"], "paddr": d["paddr"], "size": d["size"]}
            g.mem.write(g.driver_dest, VmcoreinfoRfcContent.build(content))
    elif isinstance(dev, UpstreamVmcoreinfoDevice):
        assert g.fw_cfg is not None
        scratch = alloc.take(PAGE_SIZE, what="fw_cfg DMA buffer")
        if d == default:
            LinuxFwCfgWriter(g.fw_cfg, g.mem, scratch).write(d["paddr"], d["size"])
        else:
            rec = FwCfgVmcoreinfo.build({"host_format": 0, "guest_format": d["guest_format"],
                                         "size": d["size"], "paddr": d["paddr"]})
            dma_write_file(g.fw_cfg, g.mem, scratch, UpstreamVmcoreinfoDevice.FILE, 0, rec)


# -- dump writing and truth -------------------------------------------------------------------------

@dataclass
class Truth:
    """What :func:`generate` wrote: the truth sidecar's content and the saved blobs."""

    path: Path
    truth_path: Path
    data: dict[str, Any]
    addr_blob: bytes | None = None
    fw_cfg_record: bytes | None = None
    vmgenid_addr_blob: bytes | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def expected(self, strategy: str) -> dict[str, Any]:
        return self.data["expected"][strategy]


def system_ram(g: Guest) -> list[Range]:
    """What a kdump kernel exports in /proc/vmcore: System RAM minus page 0, the legacy area
    0xA0000-0xFFFFF and the crashkernel reservation."""
    from vmci.producer.qemu_dump import subtract

    holes = [Range(0, PAGE_SIZE), Range(0xA0000, 0x60000)] + ([g.crashkernel] if g.crashkernel else [])
    return subtract(g.layout.ram_ranges(), holes)


def write_dump(g: Guest, out: Any, fmt: str, *, compression: str = "zlib") -> dict[str, Any]:
    """Write ``g`` as ``fmt`` to the seekable binary file ``out``; returns facts about it."""
    from vmci.formats.raw import write_raw
    from vmci.producer import qemu_dump as qd

    if fmt not in FORMATS:
        raise UsageError(f"format is one of {', '.join(FORMATS)}, not {fmt!r}")
    s = g.scenario
    note = qd.guest_note(g.mem, g.vmcoreinfo_device)
    facts: dict[str, Any] = {"format": fmt, "guest_note": note.to_dict()}
    if fmt == "raw":
        mem = qd.RestrictedMemory(g.mem, g.layout.ram_ranges())
        facts["size"] = write_raw(out, mem)
        return facts
    if fmt == "kexec":
        assert g.tables is not None
        first = g.mem.read(g.placed.note_paddr, 24 + -(-len(g.placed.text) // 4) * 4)
        notes = qd.kexec_notes(g.cpus, first)
        mem = qd.RestrictedMemory(g.mem, system_ram(g))
        load = (g.tables.text_va, g.tables.text_pa, g.image["image_size"])
        facts.update(qd.write_kexec_vmcore(out, mem, notes, direct_map=g.tables.page_offset,
                                           kernel_load=load))
        facts["notes"] = len(notes)
        return facts
    notes = qd.qemu_notes(g.cpus, note)
    facts["notes"] = len(notes)
    version = tuple(int(x) for x in s.qemu_version.split(".")[:2])
    if fmt in ("elf", "elf-paging"):
        mappings = qd.paging_mappings(g.mem, g.cpus) if fmt == "elf-paging" else None
        facts.update(qd.write_qemu_elf(out, g.mem, notes, mappings=mappings,
                                       qemu_version=version))  # type: ignore[arg-type]
    else:
        facts.update(qd.write_qemu_kdump(out, g.mem, notes, note, nr_cpus=len(g.cpus),
                                         compression=compression, flattened=fmt == "kdump-flat",
                                         phys_base_bug=s.phys_base_bug))
    return facts


def _note_ok(g: Guest) -> bool:
    names = {f["name"] for f in g.faults}
    return not names & {"wrong-note-name", "wrong-note-type"}


def expected_findings(g: Guest, fmt: str, dump: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What each discovery strategy should find, as the producer knows it.

    A note counts as valid when named VMCOREINFO, of type 0 and complete.  ``found`` says a valid
    text is reachable that way; ``note_paddr`` where the note is in guest RAM.
    """
    names = {f["name"] for f in g.faults}
    note = dump["guest_note"]
    appended_ok = note["appended"] and note["paddr"] == g.placed.note_paddr and _note_ok(g)
    kind = g.device_kind
    blob = g.vmcoreinfo_device.address if isinstance(g.vmcoreinfo_device, RfcVmcoreinfoDevice) else 0
    ssdt_ok = kind == "rfc" and not names & {"missing-ssdt", "bad-acpi-checksum"}
    has_notes = fmt != "raw"
    in_ram = "wrong-note-name" not in names and "vmcoreinfo-lost" not in names
    out: dict[str, dict[str, Any]] = {
        "elf-note": {"applicable": has_notes,
                     "found": has_notes and (appended_ok or (fmt == "kexec" and _note_ok(g)))},
        "kdump-header": {"applicable": fmt.startswith("kdump"),
                         "found": fmt.startswith("kdump") and appended_ok},
        "address-blob": {"applicable": kind == "rfc" and bool(blob), "found": kind == "rfc" and appended_ok,
                         "blob": blob or None},
        "fw-cfg-record": {"applicable": kind == "upstream", "found": kind == "upstream" and appended_ok},
        "acpi": {"applicable": kind == "rfc", "found": ssdt_ok and appended_ok},
        "memory-scan": {"applicable": True,
                        "found": in_ram or g.stale is not None},
    }
    for v in out.values():
        v["note_paddr"] = g.placed.note_paddr if v["found"] else None
    scan = [g.placed.note_paddr] if in_ram else []
    out["memory-scan"]["notes_in_ram"] = scan + ([g.stale.note_paddr] if g.stale else [])
    return out


def truth_data(g: Guest, fmt: str, compression: str, dump: dict[str, Any]) -> dict[str, Any]:
    s, k, t, fw = g.scenario, g.kernel, g.tables, g.firmware
    assert k is not None and t is not None and fw is not None and g.acpi is not None and g.banner is not None
    placed = g.placed
    rsdp, _ = reader.find_rsdp(g.mem)
    tables: dict[str, int] = {}
    if rsdp is not None:
        listed, _ = reader.list_tables(g.mem, rsdp)
        for tb in listed:
            tables.setdefault(f"{tb.signature}:{tb.oem_table_id}".rstrip(":"), tb.address)
    uts_off = k.value("OFFSET(uts_namespace.name)")
    dev = g.vmcoreinfo_device
    device: dict[str, Any] = {"kind": g.device_kind}
    if isinstance(dev, RfcVmcoreinfoDevice):
        page = fw.allocations[RfcVmcoreinfoDevice.FILE].address
        device.update({"rfc_offset": dev.offset, "page": page, "vcia": page, "blob": dev.address,
                       "addr_blob": bytes(dev.addr_le).hex(), "content_addr": g.driver_dest,
                       "content": {k2: g.driver[k2] for k2 in ("version", "paddr", "size")},
                       "ssdt": g.ssdts.get("VMCOREIN")})
    elif isinstance(dev, UpstreamVmcoreinfoDevice):
        device.update({"record": dev.record(), "record_hex": bytes(dev.state).hex(),
                       "has_vmcoreinfo": dev.has_vmcoreinfo})
    vmgenid = None
    if g.vmgenid_device is not None:
        vg = g.vmgenid_device
        page = fw.allocations[VmgenidDevice.FILE].address
        vmgenid = {"guid": str(vg.guid), "page": page, "vgia": page, "guid_addr": vg.address,
                   "addr_blob": bytes(vg.addr_le).hex(), "ssdt": g.ssdts.get("VMGENID")}

    def placed_dict(p: PlacedVmcoreinfo) -> dict[str, Any]:
        return {"note_paddr": p.note_paddr, "desc_paddr": p.desc_paddr, "data_paddr": p.data_paddr,
                "note_size": p.note_size, "text_size": len(p.text),
                "text_sha256": hashlib.sha256(p.text).hexdigest(), "crashtime": p.crashtime,
                "osrelease": p.layout.osrelease, "kaslr_offset": p.layout.kaslr_offset,
                "phys_base": p.layout.phys_base, "uts_paddr": p.uts_paddr}

    return {
        "schema": 1,
        "generator": "vmci generate",
        "format": fmt,
        "compression": compression if fmt.startswith("kdump") else None,
        "scenario": s.to_dict(),
        "ram": g.layout.to_dict(),
        "kernel": {
            "profile": k.profile.name, "osrelease": k.osrelease, "build_id": k.build_id_hex,
            "image": s.image_kind, "kaslr_offset": k.kaslr_offset, "phys_base": k.phys_base,
            "text_va": t.text_va, "text_pa": t.text_pa, "image_size": t.image_size, "la57": t.la57,
            "pti": t.user_pgd is not None, "page_offset": t.page_offset,
            "swapper_pg_dir": t.swapper_pg_dir, "pgd_paddr": t.pgd, "init_uts_ns": k.runtime("init_uts_ns"),
            "uts_release_vaddr": k.runtime("init_uts_ns") + uts_off + 130, "uts_paddr": placed.uts_paddr,
            "linux_banner": g.banner[0], "linux_banner_paddr": g.banner[1],
            "linux_banner_text": g.banner[2].decode(), "idt": t.idt_va,
            "crashkernel": [g.crashkernel.start, g.crashkernel.size] if g.crashkernel else None,
        },
        "vmcoreinfo": placed_dict(placed),
        "stale_note": placed_dict(g.stale) if g.stale else None,
        "cpus": [{"index": c.index, "cr0": c.cr0, "cr3": c.cr3, "cr4": c.cr4, "rip": c.regs["rip"],
                  "gdt_base": c.gdt_base, "idt_base": c.idt_base} for c in g.cpus],
        "cr3s": sorted({c.cr3 for c in g.cpus if c.cr3 is not None}),
        "acpi": {"rsdp": rsdp.address if rsdp else None, "rsdp_revision": rsdp.revision if rsdp else None,
                 "rsdt": rsdp.rsdt_address if rsdp else None, "xsdt": rsdp.xsdt_address if rsdp else None,
                 "tables": tables},
        "device": device,
        "vmgenid": vmgenid,
        "firmware": {"flavor": s.firmware,
                     "allocations": {n: {"address": a.address, "size": a.size, "opaque": a.opaque}
                                     for n, a in fw.allocations.items()},
                     "installed": [[sig, a] for sig, a in fw.installed], "log": fw.log},
        "dump": dump,
        "expected": expected_findings(g, fmt, dump),
        "faults": g.faults,
    }


def generate(scenario: Scenario, out_path: str | Path, fmt: str = "kdump-flat", *,
             compression: str = "zlib") -> Truth:
    """Build ``scenario``, write the dump to ``out_path`` and ``<out_path>.truth.json`` beside it,
    plus ``.addr-blob`` (RFC), ``.fw-cfg-record`` (upstream) and ``.vmgenid-addr`` (vmgenid)."""
    if fmt not in FORMATS:
        raise UsageError(f"format is one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "kexec" and not scenario.panic:
        scenario = replace(scenario, panic=True)
    g = build(scenario)
    out = Path(out_path)
    try:
        with out.open("wb") as f:
            dump = write_dump(g, f, fmt, compression=compression)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror}") from None
    data = truth_data(g, fmt, compression, dump)
    files: dict[str, str | None] = {"dump": out.name, "addr_blob": None, "fw_cfg_record": None,
                                    "vmgenid_addr": None}
    blobs: dict[str, bytes] = {}
    dev = g.vmcoreinfo_device
    if isinstance(dev, RfcVmcoreinfoDevice):
        blobs["addr_blob"] = bytes(dev.addr_le)
    elif isinstance(dev, UpstreamVmcoreinfoDevice):
        blobs["fw_cfg_record"] = bytes(dev.state)
    if g.vmgenid_device is not None:
        blobs["vmgenid_addr"] = bytes(g.vmgenid_device.addr_le)
    suffix = {"addr_blob": ".addr-blob", "fw_cfg_record": ".fw-cfg-record", "vmgenid_addr": ".vmgenid-addr"}
    for key, blob in blobs.items():
        p = out.with_name(out.name + suffix[key])
        p.write_bytes(blob)
        files[key] = p.name
    data["files"] = files
    truth_path = out.with_name(out.name + ".truth.json")
    truth_path.write_text(json.dumps(data, indent=2) + "\n")
    return Truth(out, truth_path, data, blobs.get("addr_blob"), blobs.get("fw_cfg_record"),
                 blobs.get("vmgenid_addr"))
