"""Firmware executing QEMU's ``etc/table-loader`` against guest RAM, SeaBIOS-like or OVMF-like.

SeaBIOS: ALLOCATE from the F-segment (0xE0000-0xFFFFF) or from the top of RAM below 4 GiB
("ZoneHigh", top-down), the RSDP stays where its blob landed in the F-segment.
OVMF: whole pages top-down below 4 GiB whatever the zone, then a second pass that probes every
ADD_POINTER target for an ACPI header, installs what it finds through an emulated
``EFI_ACPI_TABLE_PROTOCOL`` (fresh copies, its own RSDP/RSDT/XSDT in page-aligned memory),
keeps blobs that failed the probe ("opaque") and frees the others (their bytes stay in RAM).

WRITE_POINTER goes through a real fw_cfg DMA descriptor in guest RAM at ``scratch``.
The log mimics OVMF's debug messages (see seed 000).

What the firmware hands to the OS is recorded as :class:`PublishedAcpi`: the RSDP and the tables
its RSDT/XSDT list, from where the firmware put each blob (SeaBIOS: QEMU's tables in place; OVMF:
its own copies).  It is the producer's ACPI truth and the guest drivers' view of the tables;
nothing of it is read back from guest RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vmci.core.memory import PAGE_SIZE, SparseMemory
from vmci.errors import FormatError, UsageError, VmciError
from vmci.layouts.acpi import (
    FACS_SIZE,
    FADT_DSDT_OFFSET,
    FADT_FIRMWARE_CTRL_OFFSET,
    FADT_X_DSDT_OFFSET,
    FADT_X_END,
    FADT_X_FIRMWARE_CTRL_OFFSET,
    SDT_CHECKSUM_OFFSET,
    SDT_HEADER_SIZE,
    SdtHeader,
    checksum8,
    id_text,
)
from vmci.layouts.table_loader import (
    CMD_ADD_CHECKSUM,
    CMD_ADD_POINTER,
    CMD_ALLOCATE,
    CMD_WRITE_POINTER,
    ENTRY_SIZE,
    ZONE_FSEG,
    ZONE_HIGH,
    parse_script,
)
from vmci.producer.acpi_tables import (
    LOADER_FILE,
    RSDP_FILE,
    TABLES_FILE,
    AcpiBuild,
    build_acpi,
    build_rsdp,
    build_rsdt,
    build_xsdt,
    install_acpi,
)
from vmci.producer.fw_cfg import FwCfg, dma_write_file

FSEG_START = 0xF0000
FSEG_END = 0x100000
FOUR_GIB = 1 << 32
SEABIOS = "seabios"
OVMF = "ovmf"


@dataclass
class Allocation:
    name: str
    address: int
    size: int  # bytes of the fw_cfg file
    span: int  # bytes reserved (whole pages for OVMF)
    align: int
    zone: int
    opaque: bool = False  # OVMF: kept because a WRITE_POINTER or a failed probe points into it
    freed: bool = False


@dataclass(frozen=True)
class PublishedTable:
    """A table the OS finds listed in the root table: where the firmware put it."""

    signature: str
    oem_table_id: str  # trailing NULs dropped
    address: int
    length: int

    @property
    def key(self) -> str:
        """``"SIG:OEM table id"`` (``"SIG"`` when the id is empty), as the truth names tables."""
        return f"{self.signature}:{self.oem_table_id}".rstrip(":")


@dataclass
class PublishedAcpi:
    """The ACPI tables as the firmware hands them to the OS: its RSDP, root tables and the
    tables they list, in order (``xsdt`` is ``None`` for a revision-0 RSDP)."""

    rsdp: int
    revision: int
    rsdt: int
    xsdt: int | None
    tables: list[PublishedTable] = field(default_factory=list)

    def find(self, signature: str, oem_table_id: str) -> PublishedTable | None:
        """The first listed table with ``signature`` and ``oem_table_id``."""
        return next((t for t in self.tables if (t.signature, t.oem_table_id) == (signature, oem_table_id)),
                    None)

    def copy(self) -> PublishedAcpi:
        return PublishedAcpi(self.rsdp, self.revision, self.rsdt, self.xsdt, list(self.tables))


@dataclass
class FirmwareResult:
    log: list[str]
    allocations: dict[str, Allocation]
    rsdp_address: int | None
    installed: list[tuple[str, int]] = field(default_factory=list)  # OVMF: (signature, address of copy)
    # OVMF's condensed WRITE_POINTERs saved for S3: (select, offset, size, value)
    write_pointers: list[tuple[int, int, int, int]] = field(default_factory=list)
    # what the OS is handed; None when no RSDP was published (or SeaBIOS ran without the AcpiBuild)
    acpi: PublishedAcpi | None = None


def ovmf_table_size(data: bytes | bytearray | memoryview) -> int:
    """OVMF's second-pass probe of an ADD_POINTER target (``Process2ndPassCmdAddPointer`` in
    OvmfPkg's QemuFwCfgAcpi.c): the size of the FACS or ACPI table found at the start of ``data``
    (the pointee blob's remaining bytes), or 0 when none is found and the blob is kept as opaque.

    A FACS needs its 64 bytes, signature ``FACS`` and a length within 64..remaining; any other
    table a 36-byte header whose length is within 36..remaining and whose bytes sum to 0.
    """
    remaining = len(data)
    if remaining >= FACS_SIZE and bytes(data[:4]) == b"FACS":
        length = int.from_bytes(bytes(data[4:8]), "little")
        if FACS_SIZE <= length <= remaining:
            return length
    if remaining >= SDT_HEADER_SIZE:
        length = int.from_bytes(bytes(data[4:8]), "little")
        if SDT_HEADER_SIZE <= length <= remaining and checksum8(data[:length]) == 0:
            return length
    return 0


def _hex(value: int) -> str:
    """OVMF's ``0x%X`` style."""
    return f"0x{value:X}"


def _low_ram_top(mem: SparseMemory) -> int:
    tops = [min(r.end, FOUR_GIB) for r in mem.ranges if r.start < FOUR_GIB]
    if not tops:
        raise UsageError("guest RAM has nothing below 4 GiB")
    return max(tops)


class Firmware:
    """Runs the linker/loader script; one instance per boot."""

    def __init__(
        self,
        mem: SparseMemory,
        fw_cfg: FwCfg,
        *,
        flavor: str = SEABIOS,
        high_top: int | None = None,
        scratch: int = 0x7000,
        acpi: AcpiBuild | None = None,
    ) -> None:
        """``acpi`` is what QEMU built into the fw_cfg files: with it, a SeaBIOS run records
        which tables the RSDT it loaded in place lists (OVMF records its own copies anyway)."""
        if flavor not in (SEABIOS, OVMF):
            raise UsageError(f"firmware flavor is {SEABIOS!r} or {OVMF!r}, not {flavor!r}")
        self.mem, self.fw_cfg, self.flavor, self.scratch = mem, fw_cfg, flavor, scratch
        self.acpi = acpi
        top = _low_ram_top(mem)
        default_top = top if flavor == SEABIOS else max(top - 0x200000, PAGE_SIZE)
        self._high = high_top if high_top is not None else default_top
        self._fseg = FSEG_START
        self.allocs: dict[str, Allocation] = {}
        self.log: list[str] = []
        self.write_pointers: list[tuple[int, int, int, int]] = []
        self.installed: list[tuple[str, int]] = []

    # -- memory --------------------------------------------------------------------------------

    def _alloc_high(self, size: int, align: int) -> int:
        addr = (self._high - size) & ~(align - 1)
        if addr < PAGE_SIZE or not self.mem.contains(addr, size):
            raise UsageError(f"out of guest RAM allocating {size:#x} bytes below {self._high:#x}")
        self._high = addr
        return addr

    def _alloc_pages(self, size: int) -> tuple[int, int]:
        span = max(PAGE_SIZE, -(-size // PAGE_SIZE) * PAGE_SIZE)
        return self._alloc_high(span, PAGE_SIZE), span

    def _alloc_fseg(self, size: int, align: int) -> int:
        addr = -(-self._fseg // align) * align
        if addr + size > FSEG_END or not self.mem.contains(addr, size):
            raise UsageError(f"F-segment full or not RAM allocating {size:#x} bytes")
        self._fseg = addr + size
        return addr

    # -- commands --------------------------------------------------------------------------------

    def _blob(self, name: str, where: int) -> Allocation:
        alloc = self.allocs.get(name)
        if alloc is None:
            raise FormatError(f"file {name!r} was not allocated", field="file", offset=where)
        return alloc

    def _allocate(self, body: Any, where: int) -> None:
        name, align, zone = body.file, body.align, body.zone
        if name not in self.fw_cfg or not self.fw_cfg.file(name).data:
            self.log.append(f'ProcessCmdAllocate: File="{name}" missing or empty; skipped')
            return
        if name in self.allocs:
            raise FormatError(f"file {name!r} allocated twice", field="file", offset=where)
        if align <= 0 or align & (align - 1) or (self.flavor == OVMF and align > PAGE_SIZE):
            raise FormatError(f"bad alignment {align:#x} for {name!r}", field="align", offset=where)
        data = bytes(self.fw_cfg.file(name).data)
        if self.flavor == OVMF:
            addr, span = self._alloc_pages(len(data))
            self.mem.write(addr, data + bytes(span - len(data)))
        else:
            if zone == ZONE_FSEG:
                addr = self._alloc_fseg(len(data), align)
            elif zone == ZONE_HIGH:
                addr = self._alloc_high(len(data), align)
            else:
                raise FormatError(f"unknown zone {zone} for {name!r}", field="zone", offset=where)
            span = len(data)
            self.mem.write(addr, data)
        self.allocs[name] = Allocation(name, addr, len(data), span, align, zone)
        self.log.append(f'ProcessCmdAllocate: File="{name}" Alignment={_hex(align)} Zone={zone} '
                        f"Size={_hex(len(data))} Address={_hex(addr)}")

    def _add_pointer(self, body: Any, where: int) -> None:
        dest, src = self._blob(body.dest_file, where), self._blob(body.src_file, where)
        off, size = body.offset, body.size
        if size not in (1, 2, 4, 8) or off + size > dest.size:
            raise FormatError(f"bad pointer {off:#x}/{size} in {dest.name!r}", field="offset", offset=where)
        value = int.from_bytes(self.mem.read(dest.address + off, size), "little")
        if self.flavor == OVMF and value >= src.size:
            raise FormatError(f"pointer value {value:#x} beyond {src.name!r}", field="offset", offset=where)
        value += src.address
        if value >> (8 * size):
            raise FormatError(f"{src.name!r} address does not fit {size} bytes", field="size", offset=where)
        self.mem.write(dest.address + off, value.to_bytes(size, "little"))
        self.log.append(f'ProcessCmdAddPointer: PointerFile="{dest.name}" PointeeFile="{src.name}" '
                        f"PointerOffset={_hex(off)} PointerSize={size}")

    def _add_checksum(self, body: Any, where: int) -> None:
        blob = self._blob(body.file, where)
        res, start, length = body.offset, body.start, body.length
        if start + length > blob.size or res >= blob.size:
            raise FormatError(f"checksum range outside {blob.name!r}", field="length", offset=where)
        cur = self.mem.read(blob.address + res, 1)[0]
        total = checksum8(self.mem.read(blob.address + start, length))
        self.mem.write(blob.address + res, bytes([(cur - total) & 0xFF]))
        self.log.append(f'ProcessCmdAddChecksum: File="{blob.name}" ResultOffset={_hex(res)} '
                        f"Start={_hex(start)} Length={_hex(length)}")

    def _write_pointer(self, body: Any, where: int) -> None:
        src = self._blob(body.src_file, where)
        size, dst_off, src_off = body.size, body.dst_offset, body.src_offset
        if size not in (1, 2, 4, 8) or src_off > src.size:
            raise FormatError(f"bad WRITE_POINTER size {size} / offset {src_off}", field="size", offset=where)
        value = src.address + src_off
        if value >> (8 * size):
            raise FormatError("WRITE_POINTER value does not fit", field="size", offset=where)
        try:
            select = self.fw_cfg.select_of(body.dest_file)
            if self.flavor == OVMF:
                self.write_pointers.append((select, dst_off, size, value))
                self.log.append(f"SaveCondensedWritePointerToS3Context: 0x{select:04X}/"
                                f"[0x{dst_off:08X}+{size}] := {_hex(value)} ({len(self.write_pointers) - 1})")
            dma_write_file(self.fw_cfg, self.mem, self.scratch, body.dest_file, dst_off,
                           value.to_bytes(size, "little"))
        except VmciError as err:  # fw_cfg refused: report it against the script command
            raise FormatError(f"WRITE_POINTER into {body.dest_file!r} failed: {err}", field="dest_file",
                              offset=where) from None
        src.opaque = True
        self.log.append(f'ProcessCmdWritePointer: PointerFile="{body.dest_file}" PointeeFile="{src.name}" '
                        f"PointerOffset={_hex(dst_off)} PointerSize={size}")

    # -- OVMF second pass ---------------------------------------------------------------------------

    def _second_pass(self, commands: list[Any]) -> PublishedAcpi | None:
        seen: set[int] = set()
        found: list[bytes] = []
        for cmd in commands:
            if cmd.command != CMD_ADD_POINTER:
                continue
            dest, src = self.allocs[cmd.body.dest_file], self.allocs[cmd.body.src_file]
            target = int.from_bytes(self.mem.read(dest.address + cmd.body.offset, cmd.body.size), "little")
            if target in seen:
                continue
            seen.add(target)
            remaining = src.address + src.size - target
            data = self.mem.read(target, remaining)
            size = ovmf_table_size(data)
            head = (f'Process2ndPassCmdAddPointer: checking for ACPI header in "{src.name}" '
                    f"at {_hex(target)} (remaining: {_hex(remaining)}): ")
            if not size:
                src.opaque = True
                self.log.append(head + "not found; marking fw_cfg blob as opaque")
                continue
            sig = data[:4].decode("latin-1")
            self.log.append(head + f'found "{sig}" size {_hex(size)}')
            if sig not in ("RSDT", "XSDT"):
                found.append(bytes(data[:size]))
        published = self._install(found)
        self.log.append(f"InstallQemuFwCfgTables: installed {len(self.installed)} tables")
        for alloc in self.allocs.values():
            if not alloc.opaque:
                alloc.freed = True  # memory returns to the pool, bytes stay
                self.log.append(f'InstallQemuFwCfgTables: freeing "{alloc.name}"')
        return published

    def _install(self, tables: list[bytes]) -> PublishedAcpi | None:
        """The ACPI table protocol: copy each table into its own pages, then publish RSDP rev 2."""
        copies: dict[str, int] = {}
        listed: list[PublishedTable] = []
        for data in tables:
            sig = data[:4].decode("latin-1")
            addr, _ = self._alloc_pages(len(data))
            self.mem.write(addr, data)
            self.installed.append((sig, addr))
            copies.setdefault(sig, addr)
            if sig not in ("FACS", "DSDT"):
                oem_table_id = id_text(SdtHeader.parse(data[:SDT_HEADER_SIZE]).oem_table_id)
                listed.append(PublishedTable(sig, oem_table_id, addr, len(data)))
        if not self.installed:
            return None
        fadt = copies.get("FACP")
        if fadt is not None:  # repoint the FADT at the installed FACS/DSDT copies
            length = int.from_bytes(self.mem.read(fadt + 4, 4), "little")
            if "FACS" in copies:
                self.mem.write(fadt + FADT_FIRMWARE_CTRL_OFFSET, copies["FACS"].to_bytes(4, "little"))
            if "DSDT" in copies:
                self.mem.write(fadt + FADT_DSDT_OFFSET, copies["DSDT"].to_bytes(4, "little"))
            if length >= FADT_X_END:
                self.mem.write(fadt + FADT_X_FIRMWARE_CTRL_OFFSET, bytes(8))
                self.mem.write(fadt + FADT_X_DSDT_OFFSET, copies.get("DSDT", 0).to_bytes(8, "little"))
            self.mem.write(fadt + SDT_CHECKSUM_OFFSET, b"\0")
            total = checksum8(self.mem.read(fadt, length))
            self.mem.write(fadt + SDT_CHECKSUM_OFFSET, bytes([(-total) & 0xFF]))
        listed.sort(key=lambda t: t.address != fadt)  # the FADT comes first
        addresses = [t.address for t in listed]
        base, _ = self._alloc_pages(PAGE_SIZE)
        rsdt_addr, xsdt_addr = base + 0x40, base + 0x40 + ((36 + 4 * len(listed) + 15) & ~15)
        self.mem.write(rsdt_addr, build_rsdt(addresses))
        self.mem.write(xsdt_addr, build_xsdt(addresses))
        self.mem.write(base, build_rsdp(rsdt_addr, revision=2, xsdt_address=xsdt_addr))
        return PublishedAcpi(base, 2, rsdt_addr, xsdt_addr, listed)

    def _seabios_published(self) -> PublishedAcpi | None:
        """SeaBIOS leaves QEMU's tables where it allocated them: the RSDP blob, and the RSDT (and
        XSDT) inside ``etc/acpi/tables`` listing the tables at their offsets there."""
        tables, rsdp = self.allocs.get(TABLES_FILE), self.allocs.get(RSDP_FILE)
        if self.acpi is None or tables is None or rsdp is None:
            return None
        base, offsets = tables.address, self.acpi.offsets
        listed = [PublishedTable(t.signature, t.oem_table_id, base + t.offset, t.length)
                  for t in self.acpi.entries]
        xsdt = base + offsets["XSDT"] if "XSDT" in offsets else None
        return PublishedAcpi(rsdp.address, self.acpi.rsdp_revision, base + offsets["RSDT"], xsdt, listed)

    def s3_resume(self) -> None:
        """OVMF's S3 boot script: replay the condensed WRITE_POINTERs (QEMU zeroed the blobs on reset)."""
        for select, offset, size, value in self.write_pointers:
            f = self.fw_cfg.by_select(select)
            if f is None:
                raise UsageError(f"fw_cfg selector {select:#x} vanished before S3 resume")
            raw = value.to_bytes(size, "little")
            dma_write_file(self.fw_cfg, self.mem, self.scratch, f.name, offset, raw)
            self.log.append(f"S3 resume: fw_cfg {select:#06x}[{offset}+{size}] := {_hex(value)}")

    # -- driver -----------------------------------------------------------------------------------

    def run(self, script: bytes | None = None) -> FirmwareResult:
        """Execute ``script`` (default: fw_cfg ``etc/table-loader``)."""
        if script is None:
            script = bytes(self.fw_cfg.file(LOADER_FILE).data)
        commands = parse_script(script)
        handlers = {CMD_ALLOCATE: self._allocate, CMD_ADD_POINTER: self._add_pointer,
                    CMD_ADD_CHECKSUM: self._add_checksum, CMD_WRITE_POINTER: self._write_pointer}
        for i, cmd in enumerate(commands):
            handler = handlers.get(cmd.command)
            if handler is None:
                self.log.append(f"InstallQemuFwCfgTables: unknown loader command: {cmd.command:#x}")
                continue
            handler(cmd.body, i * ENTRY_SIZE)
        if self.flavor == OVMF:
            usable = [c for c in commands if c.command != CMD_ADD_POINTER
                      or (c.body.dest_file in self.allocs and c.body.src_file in self.allocs)]
            published = self._second_pass(usable)
            rsdp = published.rsdp if published else None
        else:
            published = self._seabios_published()
            rsdp_alloc = self.allocs.get(RSDP_FILE)
            rsdp = rsdp_alloc.address if rsdp_alloc else None
        return FirmwareResult(self.log, self.allocs, rsdp, self.installed, self.write_pointers, published)


def boot(
    mem: SparseMemory,
    devices: Sequence[Any] = (),
    *,
    flavor: str = SEABIOS,
    rsdp_revision: int = 0,
    fadt_revision: int = 1,
    fw_cfg: FwCfg | None = None,
) -> tuple[FwCfg, AcpiBuild, FirmwareResult]:
    """QEMU builds ACPI and registers the devices' fw_cfg files, then firmware runs the loader.

    ``devices`` may mix ACPI devices (with ``build_acpi``) and plain fw_cfg ones.
    """
    fw_cfg = fw_cfg if fw_cfg is not None else FwCfg()
    build = build_acpi([d for d in devices if hasattr(d, "build_acpi")],
                       rsdp_revision=rsdp_revision, fadt_revision=fadt_revision)
    install_acpi(fw_cfg, build)
    for dev in devices:
        dev.add_fw_cfg(fw_cfg)
    result = Firmware(mem, fw_cfg, flavor=flavor, acpi=build).run()
    return fw_cfg, build, result
