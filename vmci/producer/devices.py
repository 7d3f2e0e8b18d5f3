"""QEMU device models that expose a blob address (vmcoreinfo RFC and upstream, vmgenid), and the
guest-side drivers that fill them in.

QEMU side: each device registers its fw_cfg files and, for the ACPI-based ones, adds an SSDT
and linker commands (:meth:`build_acpi`, called from :func:`vmci.producer.acpi_tables.build_acpi`).
Guest side: :class:`RfcGuestDriver` (the RFC's out-of-tree ACPI driver) and
:class:`LinuxFwCfgWriter` (upstream ``qemu_fw_cfg``).
"""

from __future__ import annotations

import uuid

from vmci.core.memory import SparseMemory
from vmci.errors import FormatError, MemoryReadError, NotFoundError, UsageError
from vmci.layouts.acpi import SDT_HEADER_SIZE, SdtHeader, id_text
from vmci.layouts.fw_cfg import (
    PAGE_BLOB_SIZE,
    RFC_OFFSET_V1,
    VMCOREINFO_FORMAT_ELF,
    VMCOREINFO_FORMAT_NONE,
    VMGENID_GUID_OFFSET,
    FwCfgVmcoreinfo,
    GuidLE,
    VmcoreinfoRfcContent,
    VmgenidPage,
)
from vmci.layouts.table_loader import ZONE_HIGH
from vmci.machine.qemu_devices import RFC_OFFSETS
from vmci.producer import aml
from vmci.producer.acpi_tables import (
    TABLES_FILE,
    VCIA_TABLE_OFFSET,
    VGIA_TABLE_OFFSET,
    Linker,
    add_table_checksum,
    vmcoreinfo_ssdt,
    vmgenid_ssdt,
)
from vmci.producer.firmware import PublishedAcpi
from vmci.producer.fw_cfg import FwCfg, dma_write_file


def _le(blob: bytes | bytearray) -> int:
    return int.from_bytes(blob, "little")


class _PageBlobDevice:
    """What the RFC vmcoreinfo device and vmgenid share (the RFC was a clone of vmgenid): an SSDT
    naming a 4 KiB read-only blob that firmware allocates, and an 8-byte guest-writable address
    blob that firmware's WRITE_POINTER fills with blob base + ``pointee_offset``."""

    FILE = ""
    ADDR_FILE = ""
    TABLE_OFFSET = 0  # where the SSDT's Name(XXXX, DWordConst) value sits

    def __init__(self) -> None:
        self.blob = bytearray(PAGE_BLOB_SIZE)
        self.addr_le = bytearray(8)  # the migrated state (VMState: 8 raw LE bytes)

    @property
    def pointee_offset(self) -> int:
        raise NotImplementedError

    def ssdt(self) -> bytes:
        raise NotImplementedError

    def build_acpi(self, tables: bytearray, linker: Linker) -> None:
        start = len(tables)
        tables += self.ssdt()
        linker.alloc(self.FILE, self.blob, PAGE_BLOB_SIZE, ZONE_HIGH)
        linker.write_pointer(self.ADDR_FILE, 0, 8, self.FILE, self.pointee_offset)
        linker.add_pointer(TABLES_FILE, start + self.TABLE_OFFSET, 4, self.FILE, 0)
        add_table_checksum(linker, tables, start)

    def add_fw_cfg(self, fw_cfg: FwCfg) -> None:
        fw_cfg.add_file(self.FILE, self.blob)
        fw_cfg.add_file(self.ADDR_FILE, self.addr_le, writable=True)

    def reset(self) -> None:
        self.addr_le[:] = bytes(8)

    @property
    def address(self) -> int:
        """What firmware wrote back: blob base + ``pointee_offset`` (0 before the firmware ran)."""
        return _le(self.addr_le)


class RfcVmcoreinfoDevice(_PageBlobDevice):
    """The 2017 RFC ``-device vmcoreinfo``: SSDT ``VMCOREIN``, a 4 KiB read-only blob the firmware
    allocates, and an 8-byte guest-writable address blob receiving blob + ``offset``."""

    FILE = "etc/vmcoreinfo"
    ADDR_FILE = "etc/vmcoreinfo-addr"

    TABLE_OFFSET = VCIA_TABLE_OFFSET

    def __init__(self, offset: int = RFC_OFFSET_V1) -> None:
        if offset not in RFC_OFFSETS:
            raise UsageError(f"RFC vmcoreinfo offset is 40 or 36, not {offset}")
        super().__init__()
        self.offset = offset

    @property
    def pointee_offset(self) -> int:
        return self.offset

    def ssdt(self) -> bytes:
        return vmcoreinfo_ssdt(self.offset)

    def get(self, mem: SparseMemory) -> tuple[int, int]:
        """QEMU's ``vmcoreinfo_get``: (note paddr, note size) read from guest RAM.

        Like QEMU, only the low 32 bits of the address blob are used.
        """
        addr = _le(self.addr_le[:4])
        if not addr:
            raise NotFoundError("firmware has not written the vmcoreinfo address yet")
        try:
            content = VmcoreinfoRfcContent.parse(mem.read(addr, VmcoreinfoRfcContent.sizeof()))
        except MemoryReadError as err:
            raise NotFoundError(f"vmcoreinfo content at {addr:#x} is not in guest RAM: {err}") from None
        if content.version != 0:
            raise FormatError(f"unknown vmcoreinfo memory version {content.version}",
                              field="version", offset=addr)
        return content.paddr, content.size


class UpstreamVmcoreinfoDevice:
    """QEMU >= 2.11 ``-device vmcoreinfo``: one 16-byte read/write fw_cfg file, no ACPI."""

    FILE = "etc/vmcoreinfo"

    def __init__(self) -> None:
        self.state = bytearray(FwCfgVmcoreinfo.sizeof())
        self.has_vmcoreinfo = False
        self.reset()

    def add_fw_cfg(self, fw_cfg: FwCfg) -> None:
        fw_cfg.add_file(self.FILE, self.state, writable=True, on_write=self._on_write)

    def reset(self) -> None:
        self.has_vmcoreinfo = False
        self.state[:] = FwCfgVmcoreinfo.build(
            {"host_format": VMCOREINFO_FORMAT_ELF, "guest_format": 0, "size": 0, "paddr": 0})

    def _on_write(self, offset: int, length: int) -> None:
        # only one full write counts, and guest_format NONE switches it off
        guest_format = FwCfgVmcoreinfo.parse(self.state).guest_format
        full = offset == 0 and length == len(self.state)
        self.has_vmcoreinfo = full and guest_format != VMCOREINFO_FORMAT_NONE

    def record(self) -> dict[str, int]:
        rec = FwCfgVmcoreinfo.parse(self.state)
        return {k: rec[k] for k in ("host_format", "guest_format", "size", "paddr")}


class VmgenidDevice(_PageBlobDevice):
    """``-device vmgenid,guid=...``: SSDT ``VMGENID``, the GUID page (GUID little-endian at +40)."""

    FILE = "etc/vmgenid_guid"
    ADDR_FILE = "etc/vmgenid_addr"

    TABLE_OFFSET = VGIA_TABLE_OFFSET
    pointee_offset = VMGENID_GUID_OFFSET

    def __init__(self, guid: str | uuid.UUID = "auto") -> None:
        super().__init__()
        self.guid = uuid.uuid4() if guid == "auto" else uuid.UUID(str(guid))

    def ssdt(self) -> bytes:
        return vmgenid_ssdt()

    @property
    def guid(self) -> uuid.UUID:
        return VmgenidPage.parse(self.blob).guid

    @guid.setter
    def guid(self, value: uuid.UUID) -> None:
        self.blob[VMGENID_GUID_OFFSET : VMGENID_GUID_OFFSET + 16] = GuidLE.build(value)

    def query(self) -> dict[str, str]:
        """QMP ``query-vm-generation-id``: the canonical lowercase GUID string."""
        return {"guid": str(self.guid)}

    def set_guid(self, value: str | uuid.UUID, mem: SparseMemory | None = None) -> None:
        """Change the GUID; with ``mem``, also rewrite it in guest RAM like ``vmgenid_update_guest``."""
        self.guid = uuid.UUID(str(value))
        addr = _le(self.addr_le[:4])
        if mem is not None and addr:
            mem.write(addr, GuidLE.build(self.guid))


# -- guest side ----------------------------------------------------------------------------

def evaluate_addr(mem: SparseMemory, table: int, var: str) -> int:
    """Evaluate the ADDR method of the SSDT at guest-physical ``table``: Package{var + k, 0}[0]
    with ``var`` patched by firmware, read from guest RAM as the guest's AML interpreter would.

    Only the QEMU shape is understood: the leading ``Name(var, DWordConst)`` and one
    ``Add(var, k)`` in the AML; anything else is a :class:`FormatError`.
    """
    header = SdtHeader.parse(mem.read(table, SDT_HEADER_SIZE))
    table_id = id_text(header.oem_table_id)
    if header.length < SDT_HEADER_SIZE:
        raise FormatError(f"SSDT {table_id} is {header.length} bytes long", field="length", offset=table + 4)
    body = mem.read(table + SDT_HEADER_SIZE, header.length - SDT_HEADER_SIZE)
    lead = aml.name_dword(var)
    value_at = aml.name_dword_value_offset(var)
    if body[:value_at] != lead[:value_at]:
        raise FormatError(f"no Name({var}, DWordConst) leads the AML of {table_id}", field=var,
                          offset=table + SDT_HEADER_SIZE)
    value = int.from_bytes(body[value_at : value_at + 4], "little")
    pattern = bytes([aml.ADD_OP]) + aml.name_string(var)
    pos = body.find(pattern)
    if pos < 0:
        raise FormatError(f"no Add({var}, ...) in the ADDR method", field="ADDR",
                          offset=table + SDT_HEADER_SIZE)
    try:
        k, _ = aml.decode_integer(body, pos + len(pattern))
    except ValueError as err:
        raise FormatError(f"Add({var}, ...) in {table_id}: {err}", field="ADDR",
                          offset=table + SDT_HEADER_SIZE + pos) from None
    if value == 0:  # _STA returns 0: the device is not present
        raise NotFoundError(f"{var} is 0: firmware did not link the blob")
    return value + k


class RfcGuestDriver:
    """The RFC's guest ACPI driver for ``QEMUVMCI``: evaluates ADDR and writes version 0,
    the note's paddr and size there."""

    def __init__(self, mem: SparseMemory) -> None:
        self.mem = mem

    def run(self, note_paddr: int, note_size: int, acpi: PublishedAcpi | None) -> int:
        """Write the content; returns the address written (VCIA + 40 or + 36).

        ``acpi`` is what the firmware handed the guest (:attr:`FirmwareResult.acpi`); the driver
        binds to the SSDT ``VMCOREIN`` listed there.
        """
        ssdt = acpi.find("SSDT", "VMCOREIN") if acpi is not None else None
        if ssdt is None:
            raise NotFoundError("no VMCOREIN SSDT among the ACPI tables the firmware published")
        dest = evaluate_addr(self.mem, ssdt.address, "VCIA")
        content = {"version": 0, "paddr": note_paddr, "size": note_size}
        self.mem.write(dest, VmcoreinfoRfcContent.build(content))
        return dest


class LinuxFwCfgWriter:
    """Linux ``qemu_fw_cfg`` (>= 4.17): writes ``{0, ELF, size, paddr}`` to ``etc/vmcoreinfo``.

    With ``mem`` and ``scratch`` the write goes through a DMA descriptor in guest RAM, as the
    real driver does; otherwise straight into the fw_cfg store.
    """

    def __init__(self, fw_cfg: FwCfg, mem: SparseMemory | None = None, scratch: int | None = None) -> None:
        self.fw_cfg, self.mem, self.scratch = fw_cfg, mem, scratch

    def write(self, note_paddr: int, note_size: int, guest_format: int = VMCOREINFO_FORMAT_ELF) -> None:
        """Write the record (``guest_format`` other than ELF: a misbehaving driver, for faults)."""
        record = FwCfgVmcoreinfo.build(
            {"host_format": 0, "guest_format": guest_format, "size": note_size, "paddr": note_paddr})
        if self.mem is not None and self.scratch is not None:
            dma_write_file(self.fw_cfg, self.mem, self.scratch, UpstreamVmcoreinfoDevice.FILE, 0, record)
        else:
            self.fw_cfg.write(UpstreamVmcoreinfoDevice.FILE, 0, record)
