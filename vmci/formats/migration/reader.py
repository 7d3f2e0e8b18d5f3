"""QEMU migration streams (``QEVM`` v3): ``migrate "exec:cat > f"``, the state part of ``savevm`` and
the stream inside a libvirt save image.

The stream is walked once.  RAM becomes a compact index: per RAMBlock an ``array('q')`` holding,
for each target page, the file offset of the latest copy of its data (a page re-sent in a later
iteration overwrites the entry), ``0`` for a ZERO record, ``-1`` for a page the stream never sent.
Nothing of RAM is copied.  RAMBlocks are mapped to guest-physical addresses for x86 ``pc`` and
``q35`` machines (``pc.ram`` split at the machine's below-4G size; ``pc.bios`` at 4 GiB - size);
other blocks (ACPI ROM blobs, option ROMs) are only available by name through
:meth:`MigrationMemory.block`.

Device sections are skipped using the JSON VM description QEMU appends after ``QEMU_VM_EOF``
(field sizes), checked by the section footers; without a description the footer is searched for.
``vmcoreinfo`` (upstream 17-byte record or RFC 8-byte address blob) and ``vmgenid`` (8-byte
address blob) are decoded into ``facts["devices"]`` and ``facts["saved_state"]``; the ``cpu``
sections give ``Dump.cpus`` (:mod:`.migration_cpu`).
"""

from __future__ import annotations

import json
import re
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import construct as cs

from vmci.core.dump import Dump
from vmci.core.headers import UntypedHeader
from vmci.core.memory import ZEROS, Buffer, Extent, PhysicalMemory, Range, find_span
from vmci.errors import ExcludedPageError, FormatError, NotFoundError, UnsupportedError
from vmci.formats.source import Source
from vmci.layouts import struct_format
from vmci.layouts.fw_cfg import FwCfgVmcoreinfo
from vmci.layouts.migration import (
    MIG_CMD_PACKAGED,
    MIG_CMD_POSTCOPY_ADVISE,
    MIG_CMD_POSTCOPY_LISTEN,
    MIG_CMD_POSTCOPY_RAM_DISCARD,
    MIG_CMD_POSTCOPY_RESUME,
    MIG_CMD_POSTCOPY_RUN,
    QEMU_VM_COMMAND,
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
    RAM_FLAG_NAMES,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_ZERO,
    RAM_SECTION_VERSION,
    Command,
    FileHeader,
    RamRecord,
    SectionHeaderTail,
    VmcoreinfoRfcSection,
    VmcoreinfoSection,
    VmgenidSection,
)

ZERO_PAGE = 0  # index entry: the page was sent as a ZERO record
ABSENT = -1  # index entry: the stream never sent the page
GIB = 1 << 30
JOIN_LIMIT = 64  # pages joined into one extent (fewer calls for scans)
POSTCOPY_COMMANDS = {
    MIG_CMD_POSTCOPY_ADVISE: "POSTCOPY_ADVISE",
    MIG_CMD_POSTCOPY_LISTEN: "POSTCOPY_LISTEN",
    MIG_CMD_POSTCOPY_RUN: "POSTCOPY_RUN",
    MIG_CMD_POSTCOPY_RAM_DISCARD: "POSTCOPY_RAM_DISCARD",
    MIG_CMD_POSTCOPY_RESUME: "POSTCOPY_RESUME",
    MIG_CMD_PACKAGED: "PACKAGED",
}
_U64 = struct_format(RamRecord)
_U32 = struct.Struct(">I")  # vmstate's be32 scalar, for fields walked one by one
_SECTION_TAIL = struct_format(SectionHeaderTail)
_COMMAND = struct_format(Command)
_PRINTABLE = re.compile(rb"[\x21-\x7e]+")


def is_migration(head: bytes) -> bool:
    return head[:4] == QEMU_VM_FILE_MAGIC


class _Truncated(Exception):
    def __init__(self, offset: int, what: str) -> None:
        super().__init__(what)
        self.offset = offset
        self.what = what


@dataclass
class RamBlock:
    """One RAMBlock of the stream: its name, ``used_length`` and page index."""

    name: str
    size: int
    index: array
    npages: int

    def counts(self) -> tuple[int, int, int]:
        """(pages with data, zero pages, pages never sent)."""
        zero = self.index.count(ZERO_PAGE)
        absent = self.index.count(ABSENT) + self.npages - len(self.index)
        return self.npages - zero - absent, zero, absent


@dataclass(frozen=True, slots=True)
class _Map:
    start: int  # guest-physical
    size: int
    block: RamBlock
    offset: int  # offset in the block


@dataclass
class StreamIndex:
    """What one walk of a stream found."""

    version: int
    page_size: int = 4096
    machine: str | None = None
    capabilities: list[str] = field(default_factory=list)
    blocks: dict[str, RamBlock] = field(default_factory=dict)
    sections: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    saved_state: dict[str, bytes] = field(default_factory=dict)
    vmdesc: dict[str, Any] | None = None
    vmdesc_offset: int | None = None
    footers: bool | None = None
    ram_sections: int = 0
    ram_records: int = 0
    eof: bool = False
    end: int = 0
    warnings: list[str] = field(default_factory=list)


class _Walker:
    """Walks ``buf`` (the stream, starting at file offset ``base``) once."""

    def __init__(self, buf: memoryview, base: int) -> None:
        self.buf = buf
        self.base = base
        self.end = len(buf)
        self.out = StreamIndex(version=0)
        self.ids: dict[int, tuple[str, int, int]] = {}  # section_id -> (idstr, instance, version)
        self.descs: dict[tuple[str, int], dict[str, Any]] = {}
        self.last_block: RamBlock | None = None

    # -- small readers -------------------------------------------------------------------

    def fail(self, msg: str, field: str, pos: int) -> FormatError:
        return FormatError(msg, field=field, offset=self.base + pos)

    def need(self, pos: int, n: int, what: str) -> None:
        if pos + n > self.end:
            raise _Truncated(pos, what)

    def u32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return int(_U32.unpack_from(self.buf, pos)[0])

    def name(self, pos: int, what: str) -> tuple[str, int]:
        """u8 length + bytes at ``pos``: (text, position after)."""
        self.need(pos, 1, what)
        n = self.buf[pos]
        self.need(pos + 1, n, what)
        return bytes(self.buf[pos + 1 : pos + 1 + n]).decode("latin-1"), pos + 1 + n

    # -- the walk ------------------------------------------------------------------------

    def walk(self) -> StreamIndex:
        out = self.out
        if self.end < 8:
            raise FormatError("migration stream header is cut short", field="QEVM header", offset=self.base)
        head = FileHeader.parse(bytes(self.buf[:8]))
        if head.magic != QEMU_VM_FILE_MAGIC:
            raise self.fail(f"bad magic {bytes(head.magic)!r}, expected b'QEVM'", "magic", 0)
        out.version = head.version
        if head.version != QEMU_VM_FILE_VERSION:
            raise UnsupportedError(
                f"migration stream version {head.version} (only version 3 is read)",
                field="version",
                offset=self.base + 4,
            )
        self._find_vmdesc()
        pos = 8
        try:
            pos = self._sections(pos)
        except _Truncated as t:
            out.warnings.append(
                f"the stream ends at offset {self.base + self.end:#x} inside {t.what} "
                f"(from offset {self.base + t.offset:#x}); what was read before is used (truncated stream)"
            )
            pos = self.end
        out.end = self.base + pos
        if out.eof and out.vmdesc is None and pos < self.end and self.buf[pos] == QEMU_VM_VMDESCRIPTION:
            self._read_vmdesc(pos + 5, pos)
        if not out.eof and not out.warnings:
            out.warnings.append("the stream has no QEMU_VM_EOF marker")
        return out

    def _sections(self, pos: int) -> int:
        buf, out = self.buf, self.out
        while True:
            self.need(pos, 1, "a section header")
            kind = buf[pos]
            if kind == QEMU_VM_EOF:
                out.eof = True
                return pos + 1
            if kind == QEMU_VM_CONFIGURATION:
                pos = self._configuration(pos)
            elif kind in (QEMU_VM_SECTION_START, QEMU_VM_SECTION_FULL):
                self.need(pos, 6, "a section header")
                idstr, after = self.name(pos + 5, "a section header")
                self.need(after, 8, "a section header")
                sid = self.u32(pos + 1, "section_id")
                instance, version = _SECTION_TAIL.unpack_from(buf, after)
                self.ids[sid] = (idstr, instance, version)
                pos = self._body(kind, sid, after + 8, pos)
            elif kind in (QEMU_VM_SECTION_PART, QEMU_VM_SECTION_END):
                sid = self.u32(pos + 1, "section_id")
                if sid not in self.ids:
                    raise self.fail(f"section id {sid} was never started", "section_id", pos + 1)
                pos = self._body(kind, sid, pos + 5, pos)
            elif kind == QEMU_VM_COMMAND:
                self.need(pos, 5, "a command")
                _, cmd, length = _COMMAND.unpack_from(buf, pos)
                if cmd in POSTCOPY_COMMANDS:
                    raise UnsupportedError(
                        f"postcopy migration (command MIG_CMD_{POSTCOPY_COMMANDS[cmd]}) is not supported",
                        field="QEMU_VM_COMMAND",
                        offset=self.base + pos,
                    )
                self.need(pos + 5, length, "a command")
                pos += 5 + length
            else:
                raise self.fail(f"unknown section type {kind:#04x}", "section type", pos)

    def _configuration(self, pos: int) -> int:
        length = self.u32(pos + 1, "QEMU_VM_CONFIGURATION")
        if length > 256:
            raise self.fail(f"machine type name of {length} bytes", "QEMU_VM_CONFIGURATION name", pos + 1)
        self.need(pos + 5, length, "QEMU_VM_CONFIGURATION")
        self.out.machine = bytes(self.buf[pos + 5 : pos + 5 + length]).decode("latin-1")
        pos += 5 + length
        while pos < self.end and self.buf[pos] == QEMU_VM_SUBSECTION:
            name, after = self.name(pos + 1, "a configuration subsection")
            after += 4  # version_id
            if name == "configuration/target-page-bits":
                bits = self.u32(after, name)
                if not 9 <= bits <= 16:
                    raise self.fail(f"target page bits {bits}", name, after)
                self.out.page_size = 1 << bits
                pos = after + 4
            elif name == "configuration/capabilities":
                count = self.u32(after, name)
                if count > 64:
                    raise self.fail(f"{count} capabilities", name, after)
                pos = after + 4
                for _ in range(count):
                    cap, pos = self.name(pos, name)
                    self.out.capabilities.append(cap)
            elif name == "configuration/uuid":
                self.need(after, 16, name)
                pos = after + 16
            else:
                desc = _sub_desc((self.out.vmdesc or {}).get("configuration"), name)
                if desc is None:
                    raise UnsupportedError(
                        f"unknown configuration subsection {name!r}",
                        field="QEMU_VM_CONFIGURATION",
                        offset=self.base + pos,
                    )
                pos = self._vmsd_skip(desc, after)
        caps = set(self.out.capabilities)
        for cap in ("mapped-ram", "postcopy-ram", "multifd"):
            if cap in caps:
                raise UnsupportedError(
                    f"streams written with the {cap!r} capability are not supported",
                    field="configuration/capabilities",
                    offset=self.base + pos,
                )
        return pos

    def _body(self, kind: int, sid: int, pos: int, head: int) -> int:
        idstr, instance, version = self.ids[sid]
        if idstr == "ram" and instance == 0:
            if version != RAM_SECTION_VERSION:
                raise UnsupportedError(
                    f"RAM section version {version} (only 4 is read)",
                    field="ram version_id",
                    offset=self.base + head,
                )
            self.out.ram_sections += 1
            pos = self._ram(pos)
            return self._footer(pos, sid)
        if kind == QEMU_VM_SECTION_FULL:
            end = self._device_end(idstr, instance, sid, pos)
            self.out.sections.append(
                {
                    "idstr": idstr,
                    "instance_id": instance,
                    "version_id": version,
                    "section_id": sid,
                    "offset": self.base + head,
                    "size": end - pos,
                }
            )
            if idstr in ("vmcoreinfo", "vmgenid") and instance == 0:
                self._device(idstr, version, sid, pos, end)
            return self._footer(end, sid)
        if not self.out.footers:
            raise UnsupportedError(
                f"iterative section {idstr!r} cannot be skipped in a stream without section footers",
                field="section",
                offset=self.base + head,
            )
        return self._footer(self._scan_footer(sid, pos, idstr), sid)

    def _footer(self, pos: int, sid: int) -> int:
        buf = self.buf
        if self.out.footers is not False and pos + 5 <= self.end and buf[pos] == QEMU_VM_SECTION_FOOTER:
            got = self.u32(pos + 1, "section footer")
            if got != sid:
                raise self.fail(f"section footer names section {got}, expected {sid}", "section footer", pos)
            self.out.footers = True
            return pos + 5
        if self.out.footers:
            self.need(pos, 5, "a section footer")
            raise self.fail(f"section footer for section {sid} is missing", "section footer", pos)
        self.out.footers = False
        return pos

    # -- RAM -----------------------------------------------------------------------------

    def _ram(self, pos: int) -> int:
        buf, end, base = self.buf, self.end, self.base
        ps = self.out.page_size
        mask = ps - 1
        shift = ps.bit_length() - 1
        unpack = _U64.unpack_from
        block = self.last_block
        idx = block.index if block else array("q")
        page_cont = RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE
        zero_cont = RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE
        records = 0
        try:
            while True:
                # fast path: a page or zero page of the block the previous record named
                try:
                    value = unpack(buf, pos)[0]
                except struct.error:
                    raise _Truncated(pos, "a RAM record") from None
                flags = value & mask
                if flags == page_cont:
                    data = pos + 8
                    if data + ps > end:
                        raise _Truncated(pos, "a RAM page")
                    try:
                        idx[(value ^ flags) >> shift] = base + data
                    except IndexError:
                        self._grow(block, value ^ flags, pos)
                        continue
                    pos = data + ps
                    records += 1
                    continue
                if flags == zero_cont and pos + 9 <= end and not buf[pos + 8]:
                    try:
                        idx[(value ^ flags) >> shift] = ZERO_PAGE
                    except IndexError:
                        self._grow(block, value ^ flags, pos)
                        continue
                    pos += 9
                    records += 1
                    continue
                if flags & ~RAM_SAVE_FLAG_CONTINUE == RAM_SAVE_FLAG_EOS:
                    return pos + 8
                if flags == RAM_SAVE_FLAG_MEM_SIZE:
                    pos = self._mem_size(pos + 8, value ^ flags)
                    continue
                pos, block = self._ram_record(pos, value, flags, block)
                idx = block.index if block else idx
                records += 1
        finally:
            self.last_block = block
            self.out.ram_records += records

    def _grow(self, block: RamBlock | None, addr: int, rec: int) -> None:
        """Make room in ``block``'s index for ``addr`` (it starts as long as the stream can fill)."""
        if block is None:
            raise self.fail("RAM record continues no RAMBlock", "RAM_SAVE_FLAG_CONTINUE", rec)
        pg = addr // self.out.page_size
        if pg >= block.npages:
            raise self.fail(
                f"RAM page offset {addr:#x} is beyond RAMBlock {block.name!r} ({block.size:#x} bytes)",
                "RAM record addr",
                rec,
            )
        block.index.extend(array("q", [ABSENT]) * (min(block.npages, 2 * pg + 1) - len(block.index)))

    def _ram_record(
        self, rec: int, value: int, flags: int, block: RamBlock | None
    ) -> tuple[int, RamBlock | None]:
        """One RAM record off the fast path: (position after it, current block)."""
        buf, end = self.buf, self.end
        pos = rec + 8
        kind = flags & ~RAM_SAVE_FLAG_CONTINUE
        addr = value ^ flags
        if kind not in (RAM_SAVE_FLAG_PAGE, RAM_SAVE_FLAG_ZERO):
            known = [n for bit, n in RAM_FLAG_NAMES.items() if kind & bit]
            if known:
                raise UnsupportedError(
                    f"RAM encoding {', '.join(known)} is not supported (flags {flags:#x})",
                    field="RAM record flags",
                    offset=self.base + rec,
                )
            raise self.fail(f"unknown RAM record flags {flags:#x}", "RAM record flags", rec)
        if not flags & RAM_SAVE_FLAG_CONTINUE:
            name, pos = self.name(pos, "a RAM record")
            block = self.out.blocks.get(name)
            if block is None:
                raise self.fail(f"RAM record names unknown RAMBlock {name!r}", "RAMBlock idstr", rec)
        elif block is None:
            raise self.fail("RAM record continues no RAMBlock", "RAM_SAVE_FLAG_CONTINUE", rec)
        pg = addr >> (self.out.page_size.bit_length() - 1)
        if pg >= len(block.index):
            self._grow(block, addr, rec)
        if kind == RAM_SAVE_FLAG_PAGE:
            if pos + self.out.page_size > end:
                raise _Truncated(rec, f"a RAM page of {block.name!r}")
            block.index[pg] = self.base + pos
            return pos + self.out.page_size, block
        self.need(pos, 1, "a ZERO record")
        if buf[pos]:
            raise UnsupportedError(
                f"ZERO record with fill byte {buf[pos]:#04x} (pre-2.x streams)",
                field="RAM_SAVE_FLAG_ZERO",
                offset=self.base + pos,
            )
        block.index[pg] = ZERO_PAGE
        return pos + 1, block

    def _mem_size(self, pos: int, total: int) -> int:
        left = total
        ignore_shared = "x-ignore-shared" in self.out.capabilities
        while left > 0:
            name, pos = self.name(pos, "the RAMBlock list")
            self.need(pos, 8, "the RAMBlock list")
            size = _U64.unpack_from(self.buf, pos)[0]
            pos += 8 + (8 if ignore_shared else 0)
            if size > left:
                raise self.fail(
                    f"RAMBlock {name!r} of {size:#x} bytes exceeds the announced total {total:#x}",
                    "MEM_SIZE used_length",
                    pos - 8,
                )
            left -= size
            npages = -(-size // self.out.page_size)
            old = self.out.blocks.get(name)
            if old is not None:
                if old.size != size:
                    raise self.fail(f"RAMBlock {name!r} changed size", "MEM_SIZE used_length", pos - 8)
                continue
            # allocate no more entries than the rest of the stream could fill (9 bytes a page)
            have = min(npages, (self.end - pos) // 9 + 1)
            self.out.blocks[name] = RamBlock(name, size, array("q", [ABSENT]) * have, npages)
        return pos

    # -- device sections -----------------------------------------------------------------

    def _device_end(self, idstr: str, instance: int, sid: int, pos: int) -> int:
        desc = self.descs.get((idstr, instance))
        if desc is not None:
            try:
                end = self._vmsd_skip(desc, pos)
            except (_Truncated, FormatError, KeyError, TypeError, ValueError):
                end = -1
            if end >= 0 and self._ends_here(end, sid):
                return end
        if self.out.footers is not False:
            try:
                return self._scan_footer(sid, pos, idstr)
            except FormatError:
                if self.out.footers:
                    raise
        for size in {"vmgenid": (8,), "vmcoreinfo": (17, 8)}.get(idstr, ()):
            if pos + size <= self.end and self._plausible_next(pos + size):
                return pos + size
        self.need(pos, 1, f"section {idstr!r}")
        raise UnsupportedError(
            f"cannot find the end of device section {idstr!r} (no VM description, no section footers)",
            field="section",
            offset=self.base + pos,
        )

    def _ends_here(self, end: int, sid: int) -> bool:
        if end + 5 <= self.end and self.buf[end] == QEMU_VM_SECTION_FOOTER:
            return int(_U32.unpack_from(self.buf, end + 1)[0]) == sid
        return self.out.footers is not True and self._plausible_next(end)

    def _scan_footer(self, sid: int, pos: int, idstr: str) -> int:
        pattern = re.compile(re.escape(bytes([QEMU_VM_SECTION_FOOTER]) + _U32.pack(sid)))
        for m in pattern.finditer(self.buf, pos):
            if self._plausible_next(m.start() + 5):
                return m.start()
        self.need(self.end, 1, f"section {idstr!r}")  # ran to the end: the stream is cut short
        raise self.fail(f"no section footer found for section {idstr!r}", "section footer", pos)

    def _plausible_next(self, pos: int) -> bool:
        """Does a section header (or the end of the stream) plausibly start at ``pos``?"""
        buf, end = self.buf, self.end
        if pos >= end:
            return pos == end
        kind = buf[pos]
        if kind == QEMU_VM_EOF:
            return pos + 1 == end or buf[pos + 1] == QEMU_VM_VMDESCRIPTION
        if kind in (QEMU_VM_SECTION_START, QEMU_VM_SECTION_FULL):
            if pos + 6 > end:
                return False
            n = buf[pos + 5]
            if not n or pos + 6 + n + 8 > end:
                return False
            name = bytes(buf[pos + 6 : pos + 6 + n])
            instance = int(_U32.unpack_from(buf, pos + 6 + n)[0])
            return _PRINTABLE.fullmatch(name) is not None and instance < 1 << 16
        if kind in (QEMU_VM_SECTION_PART, QEMU_VM_SECTION_END):
            return pos + 5 <= end and int(_U32.unpack_from(buf, pos + 1)[0]) in self.ids
        if kind == QEMU_VM_COMMAND:
            return pos + 5 <= end and buf[pos + 1] == 0
        return False

    def _vmsd_skip(self, desc: dict[str, Any], pos: int) -> int:
        """Skip one vmstate described by the JSON ``desc`` (fields, then subsections)."""
        for f in desc.get("fields", ()):
            count = int(f.get("array_len", 1))
            kind = f.get("type")
            if kind not in ("struct", "tmp", "capability"):
                size = int(f["size"])
                if size < 0 or count < 0:
                    raise ValueError(size)
                pos += size * count
                continue
            for _ in range(count):
                if kind == "struct":
                    pos = self._vmsd_skip(f["struct"], pos)
                elif kind == "tmp":
                    pos = self._vmsd_skip(f, pos) if "fields" in f else pos + int(f["size"])
                else:
                    self.need(pos, 1, "a capability")
                    pos += 1 + self.buf[pos]
        self.need(pos, 0, "a device section")
        for sub in desc.get("subsections", ()):
            self.need(pos, 2, "a subsection")
            if self.buf[pos] != QEMU_VM_SUBSECTION:
                raise ValueError("subsection expected")
            _, after = self.name(pos + 1, "a subsection")
            pos = self._vmsd_skip(sub, after + 4)
        return pos

    def _device(self, idstr: str, version: int, sid: int, pos: int, end: int) -> None:
        raw = bytes(self.buf[pos:end])
        info: dict[str, Any] = {
            "section_id": sid,
            "instance_id": 0,
            "version_id": version,
            "offset": self.base + pos,
            "raw": raw.hex(),
        }
        fields = [f.get("name") for f in (self.descs.get((idstr, 0)) or {}).get("fields", ())]
        saved = self.out.saved_state
        if idstr == "vmgenid" and len(raw) == VmgenidSection.sizeof():
            info["vmgenid_addr"] = VmgenidSection.parse(raw).vmgenid_addr_le
            saved["vmgenid_addr_blob"] = raw
        elif (
            idstr == "vmcoreinfo"
            and len(raw) == VmcoreinfoSection.sizeof()
            and raw[0] in (0, 1)
            and (not fields or "has_vmcoreinfo" in fields)
        ):
            rec = VmcoreinfoSection.parse(raw)
            info["layout"] = "upstream"
            info |= {k: rec[k] for k in ("has_vmcoreinfo", "host_format", "guest_format", "size", "paddr")}
            saved["fw_cfg_vmcoreinfo_record"] = FwCfgVmcoreinfo.build(
                {k: rec[k] for k in ("host_format", "guest_format", "size", "paddr")}
            )
        elif idstr == "vmcoreinfo" and len(raw) == VmcoreinfoRfcSection.sizeof():
            info["layout"] = "rfc"
            info["vmcoreinfo_addr"] = VmcoreinfoRfcSection.parse(raw).vmcoreinfo_addr_le
            saved["vmcoreinfo_addr_blob"] = raw
        else:
            info["layout"] = "unknown"
            self.out.warnings.append(
                f"device section {idstr!r} has {len(raw)} bytes, a layout vmci does not know (kept raw)"
            )
        self.out.devices[idstr] = info

    # -- the VM description --------------------------------------------------------------

    def _find_vmdesc(self) -> None:
        """Look for the JSON trailer from the end, so device sections can be skipped by it."""
        buf, end = self.buf, self.end
        for window in (1 << 20, 16 << 20):
            lo = max(8, end - window)
            tail = bytes(buf[lo:end])
            nul = tail.rfind(b"\0")
            brace = tail.find(b"{", nul + 1)
            for _ in range(5):
                if brace < 5:
                    break
                at = lo + brace
                if buf[at - 5] == QEMU_VM_VMDESCRIPTION and _U32.unpack_from(buf, at - 4)[0] == end - at:
                    self._read_vmdesc(at, at - 5)
                    return
                brace = tail.find(b"{", brace + 1)
            if lo == 8:
                return

    def _read_vmdesc(self, at: int, head: int) -> None:
        if head + 5 > self.end:
            return
        length = int(_U32.unpack_from(self.buf, head + 1)[0])
        if at + length > self.end:
            self.out.warnings.append("the VM description (JSON) after QEMU_VM_EOF is cut short")
            return
        try:
            desc = json.loads(bytes(self.buf[at : at + length]))
        except (ValueError, UnicodeDecodeError) as e:
            self.out.warnings.append(f"the VM description at offset {self.base + at:#x} is not JSON: {e}")
            return
        if not isinstance(desc, dict) or not isinstance(desc.get("devices", []), list):
            self.out.warnings.append(f"the VM description at offset {self.base + at:#x} has no device list")
            return
        self.out.vmdesc = desc
        self.out.vmdesc_offset = self.base + head
        if isinstance(desc.get("page_size"), int) and desc["page_size"] in (1 << b for b in range(9, 17)):
            self.out.page_size = desc["page_size"]
        for dev in desc.get("devices", ()):
            if isinstance(dev, dict) and "name" in dev and isinstance(dev.get("instance_id", 0), int):
                self.descs[(str(dev["name"]), dev.get("instance_id", 0))] = dev


def _sub_desc(desc: Any, name: str) -> dict[str, Any] | None:
    for sub in (desc or {}).get("subsections", ()):
        if sub.get("vmsd_name") == name:
            return dict(sub)
    return None


def index_stream(src: Source, start: int = 0) -> StreamIndex:
    """Walk the migration stream at ``start`` of ``src`` once and index it."""
    view = src.view(start, src.size - start)
    try:
        return _Walker(memoryview(view), start).walk()
    except cs.ConstructError as e:  # pragma: no cover - headers are length-checked first
        raise FormatError(f"cannot parse the stream: {e}", field="stream", offset=start) from None


# -- guest-physical layout -----------------------------------------------------------------


def _version(machine: str) -> tuple[int, int] | None:
    m = re.search(r"(\d+)\.(\d+)", machine)
    return (int(m.group(1)), int(m.group(2))) if m else None


def machine_family(machine: str | None, vmdesc: dict[str, Any] | None) -> tuple[str | None, bool]:
    """("q35" | "pc" | None, guessed?) from the machine type, else from the device names."""
    if machine:
        if machine.startswith("pc-q35") or machine == "q35":
            return "q35", False
        if machine.startswith("pc-i440fx") or machine == "pc" or re.fullmatch(r"pc-\d+\.\d+", machine):
            return "pc", False
        return None, False
    names = " ".join(str(d.get("name", "")) for d in (vmdesc or {}).get("devices", ()))
    if "ICH9LPC" in names or "/mch" in names:
        return "q35", True
    if "PIIX" in names or "i440FX" in names:
        return "pc", True
    return None, True


def below_4g_size(family: str, machine: str | None, ram_size: int) -> int:
    """How much of ``pc.ram`` sits below 4 GiB (QEMU's default ``max-ram-below-4g``)."""
    if family == "q35":
        lowmem = 0x80000000 if ram_size >= 0xB0000000 else 0xB0000000
    else:
        lowmem = 0xE0000000
        version = _version(machine or "")
        gigabyte_align = version is None or version > (1, 7)
        if ram_size >= lowmem and gigabyte_align:
            lowmem = 0xC0000000
    return min(ram_size, lowmem)


class MigrationMemory(PhysicalMemory):
    """Guest-physical memory served from a stream's page index (views into the file)."""

    def __init__(self, src: Source, stream: StreamIndex, maps: list[_Map]) -> None:
        self.src = src
        self.stream = stream
        self.page_size = stream.page_size
        self._maps = sorted(maps, key=lambda m: m.start)
        self._starts = [m.start for m in self._maps]
        self._ends = [m.start + m.size for m in self._maps]
        self._ranges = [Range(m.start, m.size) for m in self._maps]

    @property
    def ranges(self) -> Sequence[Range]:
        return self._ranges

    def block(self, name: str, *, zero_fill: bool = False) -> bytes:
        """The whole RAMBlock ``name`` (``/rom@etc/acpi/tables``, ``pc.bios``, ``pc.ram``, ...)."""
        blk = self.stream.blocks.get(name)
        if blk is None:
            raise NotFoundError(f"no RAMBlock {name!r} in the stream (have: {', '.join(self.stream.blocks)})")
        return self._block_bytes(blk, 0, blk.size, zero_fill)

    def _block_bytes(self, blk: RamBlock, off: int, n: int, zero_fill: bool) -> bytes:
        ps = self.page_size
        parts: list[Buffer] = []
        pos, stop = off, off + n
        while pos < stop:
            pg, inpg = divmod(pos, ps)
            take = min(ps - inpg, stop - pos)
            fo = blk.index[pg] if pg < len(blk.index) else ABSENT
            if fo > 0:
                parts.append(self.src.view(fo + inpg, take))
            elif fo == ZERO_PAGE or zero_fill:
                parts.append(ZEROS[:take])
            else:
                raise ExcludedPageError(
                    f"page {pg * ps:#x} of RAMBlock {blk.name!r} is not in the stream", paddr=pg * ps
                )
            pos += take
        return b"".join(parts)

    def extent(self, paddr: int, limit: int) -> Extent:
        i = find_span(self._starts, self._ends, paddr, limit)
        if isinstance(i, Extent):
            return i
        m = self._maps[i]
        limit = min(limit, m.start + m.size - paddr)
        ps = self.page_size
        idx = m.block.index
        have = len(idx)
        pg, inpg = divmod(m.offset + paddr - m.start, ps)
        fo = idx[pg] if pg < have else ABSENT
        take = min(ps - inpg, limit)
        if fo > 0:
            first = self.src.view(fo + inpg, take)
            if take == limit:
                return Extent(first, take)
            parts: list[Buffer] = [first]
            cap = min(limit, JOIN_LIMIT * ps)
            pg += 1
            while take < cap and pg < have:
                fo = idx[pg]
                if fo < 0:
                    break
                n = min(ps, cap - take)
                parts.append(self.src.view(fo, n) if fo else ZEROS[:n])
                take += n
                pg += 1
            return Extent(b"".join(parts) if len(parts) > 1 else first, take)
        # a run of zero pages, or of pages the stream never sent
        cap = min(limit, len(ZEROS))
        pg += 1
        while take < cap and (idx[pg] if pg < have else ABSENT) == fo:
            take = min(take + ps, cap)
            pg += 1
        if fo == ZERO_PAGE:
            return Extent(ZEROS[:take], take)
        return Extent(None, take, "not in the stream")


def layout_memory(src: Source, stream: StreamIndex) -> tuple[MigrationMemory, dict[str, Any], list[str]]:
    """Map the RAMBlocks to guest-physical addresses; return (memory, facts, warnings)."""
    warnings: list[str] = []
    facts: dict[str, Any] = {}
    family, guessed = machine_family(stream.machine, stream.vmdesc)
    maps: list[_Map] = []
    ram = stream.blocks.get("pc.ram")
    if ram is not None and family is None and stream.machine is None:
        family, guessed = "q35", True
    if ram is not None and family is not None:
        if guessed:
            warnings.append(f"machine type not in the stream; guest-physical layout assumes {family}")
        below = below_4g_size(family, stream.machine, ram.size)
        facts["below_4g"] = below
        maps.append(_Map(0, below, ram, 0))
        if ram.size > below:
            maps.append(_Map(4 * GIB, ram.size - below, ram, below))
        bios = stream.blocks.get("pc.bios")
        if bios is not None and 0 < bios.size <= 16 << 20:
            maps.append(_Map(4 * GIB - bios.size, bios.size, bios, 0))
    elif stream.blocks:
        warnings.append(
            f"no guest-physical layout for machine {stream.machine or 'unknown'!r} with these RAMBlocks; "
            "RAM is available by block name only"
        )
    facts["machine_family"] = family
    mapped: dict[str, list[list[int]]] = {}
    for m in maps:
        mapped.setdefault(m.block.name, []).append([m.start, m.size])
    blocks = []
    for blk in stream.blocks.values():
        data, zero, absent = blk.counts()
        blocks.append(
            {
                "name": blk.name,
                "size": blk.size,
                "gpa": mapped.get(blk.name),
                "pages": data,
                "zero_pages": zero,
                "absent_pages": absent,
            }
        )
        if absent and blk.name in mapped:
            warnings.append(f"{absent} pages of RAMBlock {blk.name!r} are not in the stream")
    facts["ram_blocks"] = blocks
    return MigrationMemory(src, stream, maps), facts, warnings


def read_migration(src: Source, path: Path, *, start: int = 0, container: str = "") -> Dump:
    """Open the QEMU migration stream at offset ``start`` of ``src``."""
    from vmci.formats.migration.cpu import cpus_from_stream  # imports this module

    stream = index_stream(src, start)
    memory, facts, warnings = layout_memory(src, stream)
    cpus, cpu_warnings = cpus_from_stream(src, stream)
    facts = {
        "stream_version": stream.version,
        "machine": stream.machine,
        "page_size": stream.page_size,
        "capabilities": stream.capabilities,
        "stream_offset": start,
        "stream_end": stream.end,
        "eof": stream.eof,
        "section_footers": stream.footers,
        "ram_sections": stream.ram_sections,
        "ram_records": stream.ram_records,
        "resent_pages": stream.ram_records - sum(b.npages - b.counts()[2] for b in stream.blocks.values()),
        "vmdesc_offset": stream.vmdesc_offset,
        "vmdesc_devices": len((stream.vmdesc or {}).get("devices", ())) if stream.vmdesc else None,
        **facts,
        "sections": stream.sections,
        "devices": stream.devices,
        "saved_state": dict(stream.saved_state),
    }
    family = facts.get("machine_family")
    machine = stream.machine or "unknown machine"
    return Dump(
        path=path,
        format=container or "qemu-migration",
        description=f"QEMU migration stream ({machine}, {len(stream.blocks)} RAM blocks)"
        + (f" in a {container}" if container else ""),
        memory=memory,
        arch="x86_64" if family in ("pc", "q35") else "unknown",
        cpus=cpus,
        header=UntypedHeader(facts),
        warnings=stream.warnings + warnings + cpu_warnings,
        _closers=[src],
    )
