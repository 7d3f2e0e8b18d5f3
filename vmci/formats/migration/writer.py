"""Write QEMU migration streams (``QEVM`` v3) for a :class:`~vmci.core.memory.SparseMemory` guest, and
libvirt save images around them.

The stream is shaped like the one QEMU 7.2 writes for a stopped x86 guest: header,
CONFIGURATION (machine type), the ``ram`` section in START (MEM_SIZE block list), PART
iterations (PAGE / ZERO records, later iterations re-sending pages) and END, a few device
sections (FULL), ``QEMU_VM_EOF`` and the JSON VM description.  Every structure is built from the
declarations in :mod:`vmci.layouts.migration`.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from vmci.core.memory import PAGE_SIZE, Range, SparseMemory
from vmci.core.saved_state import VmcoreinfoRecord
from vmci.errors import UsageError
from vmci.layouts.migration import (
    LIBVIRT_FORMATS,
    LIBVIRT_HEADER_SIZE,
    LIBVIRT_MAGIC,
    LIBVIRT_VERSION,
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
    libvirt_header,
)
from vmci.machine.x86_pc import below_4g_size, machine_family

GIB = 1 << 30
RAM_SECTION_ID = 2
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
        devices.append(Device("vmcoreinfo", payload, {"fields": fields}))
    if vmcoreinfo_rfc_addr is not None:
        payload = VmcoreinfoRfcSection.build({"vmcoreinfo_addr_le": vmcoreinfo_rfc_addr})
        devices.append(Device("vmcoreinfo", payload, {"fields": _byte_array("vmcoreinfo_addr_le")}))
    if vmgenid_addr is not None:
        payload = VmgenidSection.build({"vmgenid_addr_le": vmgenid_addr})
        devices.append(Device("vmgenid", payload, {"fields": _byte_array("vmgenid_addr_le")}))
    return devices


def _bios_rom(r: Range) -> Range | None:
    """The SeaBIOS ROM QEMU maps just below 4 GiB is its own RAMBlock (``pc.bios``), not RAM."""
    return r if r.end == 4 * GIB and r.size <= 16 << 20 else None


def _ram_layout(memory: SparseMemory, machine: str) -> tuple[int, int]:
    """(ram_size, below_4g) of ``memory`` laid out as ``machine`` lays out ``pc.ram``."""
    family, _ = machine_family(machine)
    if family is None:
        raise UsageError(f"machine type {machine!r} is not an x86 pc or q35 machine")
    ram = [r for r in memory.ranges if _bios_rom(r) is None]
    ram_size = sum(r.size for r in ram)
    below = below_4g_size(family, machine, ram_size)
    want = [(0, below)] + ([(4 * GIB, ram_size - below)] if ram_size > below else [])
    have = [(r.start, r.size) for r in ram]
    if have != want:
        raise UsageError(f"guest RAM {have} does not match {machine}'s layout of {ram_size:#x} bytes: {want}")
    return ram_size, below


class _StreamWriter:
    def __init__(self, out: BinaryIO, footers: bool) -> None:
        self.out = out
        self.footers = footers
        self.written = 0

    def put(self, data: bytes) -> None:
        self.out.write(data)
        self.written += len(data)

    def footer(self, sid: int) -> None:
        if self.footers:
            self.put(SectionFooter.build({"type": QEMU_VM_SECTION_FOOTER, "section_id": sid}))

    def record(self, addr: int, flags: int, name: str | None = None) -> None:
        tag = Idstr.build(name) if name is not None else b""
        self.put(RamRecord.build({"addr_flags": addr | flags}) + tag)


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
    ram_size, below = _ram_layout(memory, machine)
    roms = dict(roms or {})
    for r in memory.ranges:
        if _bios_rom(r) is not None and "pc.bios" not in roms:
            roms["pc.bios"] = memory.read(r.start, r.size, zero_fill=True)
    blocks: dict[str, bytes | None] = {"pc.ram": None}
    for name, data in (roms or {}).items():
        blocks[name] = bytes(data) + bytes(-len(data) % ps)
    sizes = {name: ram_size if data is None else len(data) for name, data in blocks.items()}
    stale_pages: dict[int, bytes] = dict(stale or {})
    for addr, data in stale_pages.items():
        if addr % ps or len(data) != ps or not memory.contains(addr, ps):
            raise UsageError(f"stale page at {addr:#x} must be one whole page of guest RAM")
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

    def gpa(offset: int) -> int:
        return offset if offset < below else 4 * GIB + offset - below

    def page_of(name: str, offset: int) -> bytes | None:
        data = blocks[name]
        if data is None:
            addr = gpa(offset)
            old = stale_pages.get(addr)
            return old if old is not None else memory.read(addr, ps)
        return data[offset : offset + ps]

    def send(name: str, offsets: Iterator[int]) -> None:
        first = True
        for offset in offsets:
            page = page_of(name, offset)
            cont = 0 if first else RAM_SAVE_FLAG_CONTINUE
            tag = None if cont else name
            if page is None or not any(page):
                w.record(offset, RAM_SAVE_FLAG_ZERO | cont, tag)
                w.put(b"\0")
            else:
                w.record(offset, RAM_SAVE_FLAG_PAGE | cont, tag)
                w.put(page)
            first = False

    # iteration 1: every page (stale copies where given)
    w.put(SectionHeaderPart.build({"type": QEMU_VM_SECTION_PART, "section_id": sid}))
    for name, size in sizes.items():
        send(name, iter(range(0, size, ps)))
    w.record(0, RAM_SAVE_FLAG_EOS)
    w.footer(sid)
    # iteration 2: the stale pages again, now with the guest's content
    if stale_pages:
        w.put(SectionHeaderPart.build({"type": QEMU_VM_SECTION_PART, "section_id": sid}))
        offsets = sorted(a if a < 4 * GIB else a - 4 * GIB + below for a in stale_pages)
        stale_pages.clear()
        send("pc.ram", iter(offsets))
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


def write_libvirt(
    out: BinaryIO,
    stream: BinaryIO,
    *,
    xml: str,
    compression: str = "raw",
    cookie: str | None = None,
    was_running: bool = True,
    little: bool = True,
    padding: int = 64 << 10,
) -> int:
    """Wrap the migration stream read from ``stream`` in a libvirt save image; return its size."""
    formats = {name: num for num, name in LIBVIRT_FORMATS.items()}
    if compression not in ("raw", "gzip", "bzip2", "xz", "zstd"):
        raise UsageError(f"cannot write {compression!r} save images (raw, gzip, bzip2, xz, zstd)")
    data = xml.encode() + b"\0"
    cookie_offset = 0
    if cookie is not None:
        cookie_offset = len(data)
        data += cookie.encode() + b"\0"
    data += bytes(padding)
    header = libvirt_header(little).build(
        {
            "magic": LIBVIRT_MAGIC,
            "version": LIBVIRT_VERSION,
            "data_len": len(data),
            "was_running": int(was_running),
            "format": formats[compression],
            "cookie_offset": cookie_offset,
            "unused": [0] * 14,
        }
    )
    assert len(header) == LIBVIRT_HEADER_SIZE
    out.write(header + data)
    start = out.tell()
    _compress(stream, out, compression)
    return out.tell() - start + len(header) + len(data)


def _compress(stream: BinaryIO, out: BinaryIO, compression: str) -> None:
    chunk = 1 << 20
    if compression == "zstd":
        import cramjam

        comp = cramjam.zstd.Compressor()
        while block := stream.read(chunk):
            comp.compress(block)
            out.write(bytes(comp.flush()))
        out.write(bytes(comp.finish()))
        return
    opener: Any = {
        "gzip": lambda: gzip.GzipFile(fileobj=out, mode="wb", mtime=0),
        "bzip2": lambda: bz2.BZ2File(out, "wb"),
        "xz": lambda: lzma.LZMAFile(out, "wb"),  # noqa: SIM115 - closed by the with below
    }.get(compression, lambda: contextlib.nullcontext(out))
    with opener() as sink:
        while block := stream.read(chunk):
            sink.write(block)
