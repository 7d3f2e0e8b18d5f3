"""QEMU's side of ACPI: table builders, the BIOS linker, and ``acpi_build`` for a minimal x86
machine with the RFC vmcoreinfo and/or vmgenid SSDTs.

QEMU builds every table into one blob, ``etc/acpi/tables``, with pointers holding *offsets*
inside their target blob; the RSDP goes into ``etc/acpi/rsdp``; the script ``etc/table-loader``
tells firmware to allocate the blobs, add their addresses to those offsets and fix checksums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vmci.errors import UsageError
from vmci.layouts.acpi import (
    FACS_SIZE,
    FADT_DSDT_OFFSET,
    FADT_FIRMWARE_CTRL_OFFSET,
    FADT_V1_SIZE,
    FADT_V3_SIZE,
    FADT_X_DSDT_OFFSET,
    RSDP_SIGNATURE,
    RSDP_V1_SIZE,
    RSDP_V2_SIZE,
    SDT_CHECKSUM_OFFSET,
    SDT_HEADER_SIZE,
    Facs,
    FadtV1,
    FadtX,
    RsdpV2,
    SdtHeader,
    checksum8,
    id_text,
    pad_id,
)
from vmci.layouts.fw_cfg import RFC_OFFSET_V1
from vmci.layouts.table_loader import (
    CMD_ADD_CHECKSUM,
    CMD_ADD_POINTER,
    CMD_ALLOCATE,
    CMD_WRITE_POINTER,
    ZONE_FSEG,
    ZONE_HIGH,
    build_entry,
)
from vmci.producer import aml
from vmci.producer.fw_cfg import FwCfg

TABLES_FILE = "etc/acpi/tables"
RSDP_FILE = "etc/acpi/rsdp"
LOADER_FILE = "etc/table-loader"
TABLES_BLOB_SIZE = 0x20000  # QEMU pads etc/acpi/tables to 128 KiB
OEM_ID = "BOCHS "
APPNAME4 = "BXPC"

sdt = aml.sdt


# -- the linker --------------------------------------------------------------------------------

class Linker:
    """QEMU's BIOS linker: commands against named blobs, ALLOCATEs kept first."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytearray] = {}
        self._allocs: list[bytes] = []
        self._cmds: list[bytes] = []

    def alloc(self, name: str, blob: bytearray, align: int, zone: int) -> None:
        if name in self.blobs:
            raise UsageError(f"blob {name!r} allocated twice")
        if align & (align - 1) or align <= 0 or zone not in (ZONE_HIGH, ZONE_FSEG):
            raise UsageError(f"bad ALLOCATE for {name!r}: align {align} zone {zone}")
        self.blobs[name] = blob
        # QEMU prepends, so allocations run first and in reverse order of the calls
        self._allocs.insert(0, build_entry(CMD_ALLOCATE, file=name, align=align, zone=zone))

    def _blob(self, name: str) -> bytearray:
        try:
            return self.blobs[name]
        except KeyError:
            raise UsageError(f"blob {name!r} was not allocated") from None

    def add_pointer(self, dest: str, dest_offset: int, size: int, src: str, src_offset: int) -> None:
        """Pointer at ``dest+dest_offset`` to ``src+src_offset``; the offset is stored in place now."""
        blob, target = self._blob(dest), self._blob(src)
        if size not in (1, 2, 4, 8) or dest_offset + size > len(blob) or src_offset > len(target):
            raise UsageError(f"bad ADD_POINTER {dest}@{dest_offset}/{size} -> {src}+{src_offset}")
        blob[dest_offset : dest_offset + size] = src_offset.to_bytes(size, "little")
        self._cmds.append(build_entry(CMD_ADD_POINTER, dest_file=dest, src_file=src,
                                      offset=dest_offset, size=size))

    def add_checksum(self, name: str, start: int, length: int, checksum_offset: int) -> None:
        blob = self._blob(name)
        if start + length > len(blob) or not start <= checksum_offset < start + length:
            raise UsageError(f"bad ADD_CHECKSUM {name} {start}+{length} @{checksum_offset}")
        blob[checksum_offset] = 0
        self._cmds.append(build_entry(CMD_ADD_CHECKSUM, file=name, offset=checksum_offset,
                                      start=start, length=length))

    def write_pointer(self, dest: str, dst_offset: int, size: int, src: str, src_offset: int) -> None:
        """Have firmware write ``address(src) + src_offset`` into QEMU's fw_cfg file ``dest``."""
        target = self._blob(src)
        if size not in (1, 2, 4, 8) or src_offset > len(target):
            raise UsageError(f"bad WRITE_POINTER {dest}@{dst_offset}/{size} -> {src}+{src_offset}")
        self._cmds.append(build_entry(CMD_WRITE_POINTER, dest_file=dest, src_file=src,
                                      dst_offset=dst_offset, src_offset=src_offset, size=size))

    def script(self) -> bytes:
        """The ``etc/table-loader`` blob."""
        return b"".join(self._allocs + self._cmds)


def add_table_checksum(linker: Linker, tables: bytearray, offset: int) -> None:
    """QEMU's ``build_header`` tail: a checksum command over the table at ``offset``."""
    length = int.from_bytes(tables[offset + 4 : offset + 8], "little")
    linker.add_checksum(TABLES_FILE, offset, length, offset + SDT_CHECKSUM_OFFSET)


# -- plain tables (checksums valid as built; the linker recomputes them after patching) ------

def build_rsdp(rsdt_address: int, *, revision: int = 0, xsdt_address: int = 0, oem_id: str = OEM_ID) -> bytes:
    """RSDP: 20 bytes (revision 0) or 36 bytes with XSDT and extended checksum (revision 2)."""
    raw = bytearray(RsdpV2.build({
        "signature": RSDP_SIGNATURE, "checksum": 0, "oem_id": pad_id(oem_id, 6),
        "revision": revision, "rsdt_address": rsdt_address, "length": RSDP_V2_SIZE,
        "xsdt_address": xsdt_address, "extended_checksum": 0, "reserved": bytes(3),
    }))
    raw[8] = (-checksum8(raw[:RSDP_V1_SIZE])) & 0xFF
    if revision < 2:
        return bytes(raw[:RSDP_V1_SIZE])
    raw[32] = (-checksum8(raw)) & 0xFF
    return bytes(raw)


def build_rsdt(addresses: list[int], *, oem_id: str = OEM_ID) -> bytes:
    body = b"".join(a.to_bytes(4, "little") for a in addresses)
    return sdt("RSDT", body, oem_id=oem_id, oem_table_id=APPNAME4 + "RSDT")


def build_xsdt(addresses: list[int], *, oem_id: str = OEM_ID) -> bytes:
    body = b"".join(a.to_bytes(8, "little") for a in addresses)
    return sdt("XSDT", body, oem_id=oem_id, oem_table_id=APPNAME4 + "XSDT")


def build_facs() -> bytes:
    return Facs.build({
        "signature": b"FACS", "length": FACS_SIZE, "hardware_signature": 0, "firmware_waking_vector": 0,
        "global_lock": 0, "flags": 0, "x_firmware_waking_vector": 0, "version": 0,
        "reserved": bytes(3), "ospm_flags": 0, "reserved2": bytes(24),
    })


def build_fadt(facs: int, dsdt: int, *, revision: int = 1, oem_id: str = OEM_ID) -> bytes:
    """A minimal FADT: ACPI 1.0 (116 bytes) or revision 3 (244 bytes, X_DSDT set, X_FIRMWARE_CTRL 0)."""
    v1 = FadtV1.build({
        "header": dict.fromkeys(("length", "revision", "checksum", "oem_revision", "creator_revision"), 0)
        | {"signature": b"FACP", "oem_id": bytes(6), "oem_table_id": bytes(8), "creator_id": bytes(4)},
        "firmware_ctrl": facs, "dsdt": dsdt, "int_model": 1, "preferred_pm_profile": 0, "sci_int": 9,
        "smi_cmd": 0xB2, "acpi_enable": 0xF1, "acpi_disable": 0xF0, "pm_blocks": bytes(57), "reserved": 0,
        "flags": 0,
    })[SDT_HEADER_SIZE:]
    body = v1
    if revision >= 3:
        body += FadtX.build({"reset_reg": bytes(12), "reset_value": 0, "arm_boot_arch": 0, "minor_version": 0,
                             "x_firmware_ctrl": 0, "x_dsdt": dsdt})
        body = body.ljust(FADT_V3_SIZE - SDT_HEADER_SIZE, b"\0")
    assert len(body) + SDT_HEADER_SIZE in (FADT_V1_SIZE, FADT_V3_SIZE)
    return sdt("FACP", body, revision=revision, oem_id=oem_id, oem_table_id=APPNAME4 + "FACP")


def build_dsdt(*, oem_id: str = OEM_ID) -> bytes:
    """A minimal DSDT: the \\_SB scope and a PCI host bridge."""
    pci0 = aml.device("PCI0", aml.name("_HID", aml.dword_const(0x030AD041)),  # EisaId("PNP0A03")
                      aml.name("_ADR", aml.zero()))
    return aml.definition_block("DSDT", aml.scope("\\_SB", pci0), oem_id=oem_id,
                                oem_table_id=APPNAME4 + "DSDT")


# -- the seeds' SSDTs ------------------------------------------------------------------------

def _sta_addr_methods(var: str, offset: int) -> tuple[bytes, bytes]:
    """``_STA`` (0x0F unless ``var`` is 0) and ``ADDR`` (Package{var + offset, 0})."""
    sta = aml.method(
        "_STA", 0,
        aml.store(aml.integer(0x0F), aml.local(0)),
        aml.if_(aml.lequal(aml.name_ref(var), aml.integer(0)), aml.store(aml.integer(0), aml.local(0))),
        aml.return_(aml.local(0)),
    )
    addr = aml.method(
        "ADDR", 0,
        aml.store(aml.package(2), aml.local(0)),
        aml.store(aml.add(aml.name_ref(var), aml.integer(offset)), aml.index(aml.local(0), aml.integer(0))),
        aml.store(aml.integer(0), aml.index(aml.local(0), aml.integer(1))),
        aml.return_(aml.local(0)),
    )
    return sta, addr


VCIA_TABLE_OFFSET = SDT_HEADER_SIZE + aml.name_dword_value_offset("VCIA")  # 42
VGIA_TABLE_OFFSET = SDT_HEADER_SIZE + aml.name_dword_value_offset("VGIA")  # 42


def vmcoreinfo_ssdt(offset: int = RFC_OFFSET_V1, *, vcia: int = 0, oem_id: str = OEM_ID) -> bytes:
    """The RFC SSDT ``VMCOREIN``: Name(VCIA) first, then \\_SB.VMCI with _HID, _STA, ADDR."""
    sta, addr = _sta_addr_methods("VCIA", offset)
    dev = aml.device("VMCI", aml.name("_HID", aml.string("QEMUVMCI")), sta, addr)
    return aml.definition_block("SSDT", aml.name_dword("VCIA", vcia), aml.scope("\\_SB", dev),
                                oem_id=oem_id, oem_table_id="VMCOREIN")


def vmgenid_ssdt(*, vgia: int = 0, oem_id: str = OEM_ID) -> bytes:
    """The SSDT ``VMGENID``: Name(VGIA), \\_SB.VGEN, and \\_GPE._E05 notifying it."""
    sta, addr = _sta_addr_methods("VGIA", 40)
    dev = aml.device(
        "VGEN",
        aml.name("_HID", aml.string("QEMUVGID")),
        aml.name("_CID", aml.string("VM_Gen_Counter")),
        aml.name("_DDN", aml.string("VM_Gen_Counter")),
        sta, addr,
    )
    gpe = aml.method("\\_GPE._E05", 0, aml.notify(aml.name_ref("\\_SB.VGEN"), aml.integer(0x80)))
    return aml.definition_block("SSDT", aml.name_dword("VGIA", vgia), aml.scope("\\_SB", dev), gpe,
                                oem_id=oem_id, oem_table_id="VMGENID")


# -- acpi_build ------------------------------------------------------------------------------

class AcpiDevice(Protocol):
    """A device that adds its own SSDT to ``tables`` and its commands to ``linker``."""

    def build_acpi(self, tables: bytearray, linker: Linker) -> None: ...


@dataclass(frozen=True)
class BuiltTable:
    """A table QEMU put into ``etc/acpi/tables`` and listed in the RSDT (and XSDT)."""

    signature: str
    oem_table_id: str  # trailing NULs dropped
    offset: int  # inside etc/acpi/tables
    length: int

    @property
    def key(self) -> str:
        """``"SIG:OEM table id"`` (``"SIG"`` when the id is empty), as the truth names tables."""
        return f"{self.signature}:{self.oem_table_id}".rstrip(":")


def built_table(tables: bytes | bytearray, offset: int) -> BuiltTable:
    """The record of the table just appended at ``offset``: its own header's words."""
    hdr = SdtHeader.parse(bytes(tables[offset : offset + SDT_HEADER_SIZE]))
    return BuiltTable(hdr.signature.decode("latin-1"), id_text(hdr.oem_table_id), offset, hdr.length)


@dataclass
class AcpiBuild:
    """QEMU's ACPI blobs: ``offsets`` maps "FACS", "DSDT", "FACP", "SSDT:<oem table id>",
    "RSDT", "XSDT" to offsets inside ``tables``; ``entries`` are the tables the RSDT (and XSDT)
    list, in their order; ``rsdp_revision`` is the revision of the RSDP in ``rsdp``."""

    tables: bytearray
    rsdp: bytearray
    linker: Linker
    offsets: dict[str, int] = field(default_factory=dict)
    entries: list[BuiltTable] = field(default_factory=list)
    rsdp_revision: int = 0

    @property
    def loader(self) -> bytes:
        return self.linker.script()


def build_acpi(
    devices: Sequence[AcpiDevice] = (),
    *,
    rsdp_revision: int = 0,
    fadt_revision: int = 1,
    blob_size: int = TABLES_BLOB_SIZE,
) -> AcpiBuild:
    """Build the tables the QEMU way: FACS, DSDT, FACP, device SSDTs, RSDT (and XSDT for a
    revision-2 RSDP), the RSDP blob, and the linker script that ties them together."""
    linker = Linker()
    tables = bytearray()
    linker.alloc(TABLES_FILE, tables, 64, ZONE_HIGH)
    offsets: dict[str, int] = {"FACS": 0}
    tables += build_facs()

    offsets["DSDT"] = len(tables)
    tables += build_dsdt()
    add_table_checksum(linker, tables, offsets["DSDT"])

    fadt = offsets["FACP"] = len(tables)
    tables += build_fadt(offsets["FACS"], offsets["DSDT"], revision=fadt_revision)
    linker.add_pointer(TABLES_FILE, fadt + FADT_FIRMWARE_CTRL_OFFSET, 4, TABLES_FILE, offsets["FACS"])
    linker.add_pointer(TABLES_FILE, fadt + FADT_DSDT_OFFSET, 4, TABLES_FILE, offsets["DSDT"])
    if fadt_revision >= 3:
        linker.add_pointer(TABLES_FILE, fadt + FADT_X_DSDT_OFFSET, 8, TABLES_FILE, offsets["DSDT"])
    add_table_checksum(linker, tables, fadt)

    listed = [fadt]
    for dev in devices:
        start = len(tables)
        dev.build_acpi(tables, linker)
        if len(tables) > start:
            table_id = bytes(tables[start + 16 : start + 24]).rstrip(b"\0").decode("latin-1")
            offsets[f"{tables[start:start + 4].decode('latin-1')}:{table_id}"] = start
            listed.append(start)

    roots = [("RSDT", 4)] + ([("XSDT", 8)] if rsdp_revision >= 2 else [])
    for sig, size in roots:
        root = offsets[sig] = len(tables)
        tables += (build_rsdt if size == 4 else build_xsdt)(listed)
        for i, target in enumerate(listed):
            linker.add_pointer(TABLES_FILE, root + SDT_HEADER_SIZE + i * size, size, TABLES_FILE, target)
        add_table_checksum(linker, tables, root)

    rsdp = bytearray(build_rsdp(offsets["RSDT"], revision=rsdp_revision, xsdt_address=offsets.get("XSDT", 0)))
    linker.alloc(RSDP_FILE, rsdp, 16, ZONE_FSEG)
    linker.add_pointer(RSDP_FILE, 16, 4, TABLES_FILE, offsets["RSDT"])
    if rsdp_revision >= 2:
        linker.add_pointer(RSDP_FILE, 24, 8, TABLES_FILE, offsets["XSDT"])
    linker.add_checksum(RSDP_FILE, 0, RSDP_V1_SIZE, 8)
    if rsdp_revision >= 2:
        linker.add_checksum(RSDP_FILE, 0, RSDP_V2_SIZE, 32)

    if len(tables) % blob_size:  # QEMU's acpi_align_size
        tables += bytes(blob_size - len(tables) % blob_size)
    entries = [built_table(tables, off) for off in listed]
    return AcpiBuild(tables, rsdp, linker, offsets, entries, rsdp_revision)


def install_acpi(fw_cfg: FwCfg, build: AcpiBuild) -> None:
    """QEMU's ``acpi_setup``: publish the tables, RSDP and loader script as read-only fw_cfg files."""
    fw_cfg.add_file(TABLES_FILE, build.tables)
    fw_cfg.add_file(RSDP_FILE, build.rsdp)
    fw_cfg.add_file(LOADER_FILE, build.loader)
