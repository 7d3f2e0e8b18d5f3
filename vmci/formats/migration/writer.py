"""Write QEMU migration streams (``QEVM`` v3) for a :class:`~vmci.core.memory.SparseMemory` guest
(:func:`vmci.formats.libvirt.write_libvirt` wraps one in a libvirt save image).

The stream is shaped like the one QEMU 7.2 writes for a stopped x86 guest (or an Arm ``virt``
one: ``mach-virt.ram`` from 1 GiB, ``machine="virt-7.2"``): header,
CONFIGURATION (machine type), the ``ram`` section in START (MEM_SIZE block list), PART
iterations (PAGE / ZERO records, later iterations re-sending pages) and END, a few device
sections (FULL), ``QEMU_VM_EOF`` and the JSON VM description.  Every structure is built from the
declarations in :mod:`vmci.layouts.migration`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from vmci.core.memory import PAGE_SIZE, Buffer, Range, SparseMemory
from vmci.core.saved_state import VmcoreinfoRecord
from vmci.errors import UsageError
from vmci.layouts import struct_format
from vmci.layouts.migration import (
    QEMU_VM_CONFIGURATION,
    QEMU_VM_EOF,
    QEMU_VM_FILE_MAGIC,
    QEMU_VM_FILE_VERSION,
    QEMU_VM_SECTION_END,
    QEMU_VM_SECTION_FOOTER,
    QEMU_VM_SECTION_FULL,
    QEMU_VM_SECTION_PART,
    QEMU_VM_SECTION_START,
    QEMU_VM_SUBSECTION,
    QEMU_VM_VMDESCRIPTION,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_ZERO,
    RAM_SECTION_VERSION,
    Configuration,
    FileHeader,
    Idstr,
    RamBlockEntry,
    RamRecord,
    SectionFooter,
    SectionHeaderFull,
    SectionHeaderPart,
    SubsectionHeader,
    VmcoreinfoRfcSection,
    VmcoreinfoSection,
    VmdescHeader,
    VmgenidSection,
)
from vmci.machine.aarch64_virt import VIRT_MEM, VirtRam
from vmci.machine.aarch64_virt import machine_family as virt_family
from vmci.machine.qemu_devices import VMCOREINFO, VMGENID
from vmci.machine.x86_pc import (
    BIOS_BLOCK,
    FOUR_GIB,
    RAM_BLOCK,
    RamSplit,
    is_bios_rom,
    machine_family,
    ram_split,
)

RAM_SECTION_ID = 2
_RECORD = struct_format(RamRecord)  # be64 offset|flags
_BYTE_ARRAY_8 = [{"name": "", "array_len": 8, "type": "uint8", "size": 1}]


@dataclass(frozen=True)
class Device:
    """A FULL device section: ``payload`` bytes described by ``desc`` (the vmdesc JSON entry)."""

    idstr: str
    payload: bytes
    desc: dict[str, Any]
    version: int = 1
    instance_id: int = 0  # per device kind: vCPU n's ``cpu`` section is instance n


def _byte_array(name: str) -> list[dict[str, Any]]:
    return [dict(_BYTE_ARRAY_8[0], name=name)]


def standard_devices(
    *,
    vmcoreinfo_record: VmcoreinfoRecord | None = None,
    vmcoreinfo_rfc_addr: int | None = None,
    vmgenid_addr: int | None = None,
) -> list[Device]:
    """A timer, a device with a subsection, and the vmcoreinfo / vmgenid sections asked for."""
    if vmcoreinfo_record is not None and vmcoreinfo_rfc_addr is not None:
        raise UsageError("a stream holds one vmcoreinfo device: upstream record or RFC blob, not both")
    devices = [
        Device(
            "timer",
            bytes(range(1, 25)),
            {
                "fields": [
                    {"name": "cpu_ticks_offset", "type": "int64", "size": 8},
                    {"name": "unused", "type": "unused_buffer", "size": 8},
                    {"name": "cpu_clock_offset", "type": "int64", "size": 8},
                ]
            },
            version=2,
        ),
        Device(
            "port92",
            b"\x00"
            + SubsectionHeader.build({"type": QEMU_VM_SUBSECTION, "name": "port92/extra", "version_id": 1})
            + b"\x7e\x00\x00\x00\x04",  # looks like this section's footer: skipping must not stop here
            {
                "fields": [{"name": "outport", "type": "uint8", "size": 1}],
                "subsections": [
                    {
                        "vmsd_name": "port92/extra",
                        "version": 1,
                        "fields": [{"name": "x", "type": "buffer", "size": 5}],
                    }
                ],
            },
        ),
    ]
    if vmcoreinfo_record is not None:
        rec = vmcoreinfo_record
        payload = VmcoreinfoSection.build(
            {
                "has_vmcoreinfo": rec.has_vmcoreinfo,
                "host_format": rec.host_format,
                "guest_format": rec.guest_format,
                "size": rec.size,
                "paddr": rec.paddr,
            }
        )
        fields = [
            {"name": "has_vmcoreinfo", "type": "bool", "size": 1},
            {"name": "vmcoreinfo.host_format", "type": "uint16", "size": 2},
            {"name": "vmcoreinfo.guest_format", "type": "uint16", "size": 2},
            {"name": "vmcoreinfo.size", "type": "uint32", "size": 4},
            {"name": "vmcoreinfo.paddr", "type": "uint64", "size": 8},
        ]
        devices.append(Device(VMCOREINFO, payload, {"fields": fields}))
    if vmcoreinfo_rfc_addr is not None:
        payload = VmcoreinfoRfcSection.build({"vmcoreinfo_addr_le": vmcoreinfo_rfc_addr})
        devices.append(Device(VMCOREINFO, payload, {"fields": _byte_array("vmcoreinfo_addr_le")}))
    if vmgenid_addr is not None:
        payload = VmgenidSection.build({"vmgenid_addr_le": vmgenid_addr})
        devices.append(Device(VMGENID, payload, {"fields": _byte_array("vmgenid_addr_le")}))
    return devices


def _pieces(memory: SparseMemory) -> tuple[list[Range], Range | None]:
    """``memory``'s RAM ranges, and the firmware ROM QEMU maps just below 4 GiB (its own RAMBlock,
    ``pc.bios``, not RAM).  Ranges are cut at 4 GiB first: the ROM and RAM above 4 GiB touch."""
    cut: list[Range] = []
    for r in memory.ranges:
        if r.start < FOUR_GIB < r.end:
            cut += [Range(r.start, FOUR_GIB - r.start), Range(FOUR_GIB, r.end - FOUR_GIB)]
        else:
            cut.append(r)
    rom = [r for r in cut if is_bios_rom(r.start, r.size)]
    return [r for r in cut if r not in rom], (rom[0] if rom else None)


def _ram_layout(memory: SparseMemory, machine: str) -> RamSplit | VirtRam:
    """``memory``'s RAM as ``pc.ram`` of a ``machine`` (or ``mach-virt.ram`` of an Arm ``virt``
    machine): refused unless the machine lays it out so."""
    family, _ = machine_family(machine)
    if family is None:
        if virt_family(machine)[0] is not None:
            have = [(r.start, r.size) for r in memory.ranges]
            virt = VirtRam(sum(r.size for r in memory.ranges))
            if have != virt.ranges():
                raise UsageError(f"guest RAM {have} is not a virt machine's (one range from {VIRT_MEM:#x})")
            return virt
        raise UsageError(f"machine type {machine!r} is not an x86 pc or q35 machine or an Arm virt machine")
    ram, _ = _pieces(memory)
    split = ram_split(family, sum(r.size for r in ram), machine=machine)
    want = [(0, split.below_4g)] + ([(FOUR_GIB, split.above_4g)] if split.above_4g else [])
    have = [(r.start, r.size) for r in ram]
    if have != want:
        raise UsageError(f"guest RAM {have} does not match {machine}'s layout of {split.ram_size:#x} bytes: "
                         f"{want}")
    return split


class _StreamWriter:
    def __init__(self, out: BinaryIO, footers: bool) -> None:
        self.out = out
        self.footers = footers
        self.written = 0

    def put(self, data: Buffer) -> None:
        self.out.write(data)
        self.written += len(data)

    def footer(self, sid: int) -> None:
        if self.footers:
            self.put(SectionFooter.build({"type": QEMU_VM_SECTION_FOOTER, "section_id": sid}))

    def record(self, addr: int, flags: int) -> None:
        """A RAM record without payload (MEM_SIZE's total, EOS)."""
        self.put(_RECORD.pack(addr | flags))


def write_migration(
    out: BinaryIO,
    memory: SparseMemory,
    *,
    machine: str = "pc-q35-7.2",
    roms: Mapping[str, bytes] | None = None,
    devices: list[Device] | None = None,
    stale: Mapping[int, bytes] | None = None,
    footers: bool = True,
    vmdesc: bool = True,
    configuration: bool = True,
) -> int:
    """Write ``memory`` as a migration stream; return the number of bytes written.

    ``roms`` are extra RAMBlocks by name (``pc.bios``, ``/rom@etc/acpi/tables``, ...), padded to
    whole pages.  ``stale`` maps page addresses to contents sent in the first iteration; the
    guest's real content follows in a later iteration (the copy a reader must keep).
    """
    ps = PAGE_SIZE
    split = _ram_layout(memory, machine)
    ram_block = split.block if isinstance(split, VirtRam) else RAM_BLOCK
    roms = dict(roms or {})
    _, rom = _pieces(memory)
    if rom is not None and BIOS_BLOCK not in roms and not isinstance(split, VirtRam):
        roms[BIOS_BLOCK] = memory.read(rom.start, rom.size, zero_fill=True)
    blocks: dict[str, bytes | None] = {ram_block: None}
    for name, data in (roms or {}).items():
        blocks[name] = bytes(data) + bytes(-len(data) % ps)
    sizes = {name: split.ram_size if data is None else len(data) for name, data in blocks.items()}
    stale_pages: dict[int, bytes] = dict(stale or {})
    resent: list[int] = []  # pc.ram offsets of the stale pages
    for addr, data in stale_pages.items():
        offset = split.offset(addr)
        if addr % ps or len(data) != ps or offset is None or not memory.contains(addr, ps):
            raise UsageError(f"stale page at {addr:#x} must be one whole page of guest RAM")
        resent.append(offset)
    w = _StreamWriter(out, footers)
    w.put(FileHeader.build({"magic": QEMU_VM_FILE_MAGIC, "version": QEMU_VM_FILE_VERSION}))
    if configuration:
        w.put(Configuration.build({"type": QEMU_VM_CONFIGURATION, "name": machine}))
    sid = RAM_SECTION_ID
    # START: the block list only
    w.put(
        SectionHeaderFull.build(
            {
                "type": QEMU_VM_SECTION_START,
                "section_id": sid,
                "idstr": "ram",
                "instance_id": 0,
                "version_id": RAM_SECTION_VERSION,
            }
        )
    )
    w.record(sum(sizes.values()), RAM_SAVE_FLAG_MEM_SIZE)
    for name, size in sizes.items():
        w.put(RamBlockEntry.build({"idstr": name, "used_length": size}))
    w.record(0, RAM_SAVE_FLAG_EOS)
    w.footer(sid)

    def ram_pages() -> Iterator[tuple[int, Buffer]]:
        """``(pc.ram offset, page)`` in offset order, stale copies where given."""
        offset = 0
        for start, size in split.ranges():
            for addr, page in memory.pages(start, start + size):
                old = stale_pages.get(addr)
                yield offset + addr - start, page if old is None else old
            offset += size

    def block_pages(name: str) -> Iterator[tuple[int, Buffer]]:
        data = blocks[name]
        if data is None:
            return ram_pages()
        return ((offset, data[offset : offset + ps]) for offset in range(0, len(data), ps))

    def send(name: str, pages: Iterator[tuple[int, Buffer]]) -> None:
        """PAGE or ZERO records; the first names the block, the rest CONTINUE it."""
        zero, pack = bytes(ps), _RECORD.pack
        tag, cont = Idstr.build(name), 0
        for offset, page in pages:
            if page == zero:
                w.put(pack(offset | RAM_SAVE_FLAG_ZERO | cont) + tag + b"\0")
            else:
                w.put(pack(offset | RAM_SAVE_FLAG_PAGE | cont) + tag)
                w.put(page)
            tag, cont = b"", RAM_SAVE_FLAG_CONTINUE

    # iteration 1: every page (stale copies where given)
    w.put(SectionHeaderPart.build({"type": QEMU_VM_SECTION_PART, "section_id": sid}))
    for name in sizes:
        send(name, block_pages(name))
    w.record(0, RAM_SAVE_FLAG_EOS)
    w.footer(sid)
    # iteration 2: the stale pages again, now with the guest's content
    if stale_pages:
        w.put(SectionHeaderPart.build({"type": QEMU_VM_SECTION_PART, "section_id": sid}))
        send(ram_block, ((offset, memory.read(split.gpa(offset), ps)) for offset in sorted(resent)))
        w.record(0, RAM_SAVE_FLAG_EOS)
        w.footer(sid)
    w.put(SectionHeaderPart.build({"type": QEMU_VM_SECTION_END, "section_id": sid}))
    w.record(0, RAM_SAVE_FLAG_EOS)
    w.footer(sid)
    described = []
    for n, dev in enumerate(devices if devices is not None else standard_devices(), start=sid + 1):
        w.put(
            SectionHeaderFull.build(
                {
                    "type": QEMU_VM_SECTION_FULL,
                    "section_id": n,
                    "idstr": dev.idstr,
                    "instance_id": dev.instance_id,
                    "version_id": dev.version,
                }
            )
        )
        w.put(dev.payload)
        w.footer(n)
        described.append(
            {
                "name": dev.idstr,
                "instance_id": dev.instance_id,
                "vmsd_name": dev.idstr,
                "version": dev.version,
                **dev.desc,
            }
        )
    w.put(bytes([QEMU_VM_EOF]))
    if vmdesc:
        text = json.dumps({"page_size": ps, "devices": described}, separators=(",", ":")).encode()
        w.put(VmdescHeader.build({"type": QEMU_VM_VMDESCRIPTION, "length": len(text)}) + text)
    return w.written

