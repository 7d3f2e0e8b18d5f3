"""The section walker of QEMU migration streams (``QEVM`` v3): one pass over the stream, giving a
:class:`StreamIndex`.

The ``ram`` section's records go to :mod:`.ram`'s page index.  Device sections are skipped using
the JSON VM description QEMU appends after ``QEMU_VM_EOF`` (field sizes), checked by the section
footers; without a description the footer is searched for.  The ``vmcoreinfo`` and ``vmgenid``
sections are decoded by :mod:`vmci.machine.qemu_devices`; the ``cpu`` sections are only located
here (:mod:`.cpu` decodes them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import construct as cs

from vmci.core.saved_state import DeviceSection, DeviceState
from vmci.errors import FormatError, UnsupportedError
from vmci.formats.migration.cursor import U32, Cursor, Truncated
from vmci.formats.migration.ram import RamBlock, RamReader
from vmci.formats.source import Source
from vmci.layouts import struct_format
from vmci.layouts.migration import (
    POSTCOPY_COMMANDS,
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
    RAM_SECTION_VERSION,
    Command,
    FileHeader,
    SectionHeaderTail,
)
from vmci.machine.qemu_devices import SECTION_SIZES, VMCOREINFO, VMGENID, decode_section

_SECTION_TAIL = struct_format(SectionHeaderTail)
_COMMAND = struct_format(Command)
_PRINTABLE = re.compile(rb"[\x21-\x7e]+")
_UNSUPPORTED_CAPABILITIES = ("mapped-ram", "postcopy-ram", "multifd")


def is_migration(head: bytes) -> bool:
    return head[:4] == QEMU_VM_FILE_MAGIC


@dataclass
class StreamIndex:
    """What one walk of a stream found."""

    version: int
    page_size: int = 4096
    machine: str | None = None
    capabilities: list[str] = field(default_factory=list)
    blocks: dict[str, RamBlock] = field(default_factory=dict)
    sections: list[DeviceSection] = field(default_factory=list)
    devices: dict[str, DeviceState] = field(default_factory=dict)
    vmdesc: dict[str, Any] | None = None
    vmdesc_offset: int | None = None
    footers: bool | None = None
    ram_sections: int = 0
    ram_records: int = 0
    eof: bool = False
    end: int = 0
    warnings: list[str] = field(default_factory=list)

    def device_names(self) -> list[str]:
        """The device names in the VM description (empty without one)."""
        devices = (self.vmdesc or {}).get("devices", ())
        return [str(d.get("name", "")) for d in devices if isinstance(d, dict)]


class _Walker(Cursor):
    """Walks ``buf`` (the stream, starting at file offset ``base``) once."""

    def __init__(self, buf: memoryview, base: int) -> None:
        super().__init__(buf, base)
        self.out = StreamIndex(version=0)
        self.ram = RamReader(buf, base, self.out.blocks)
        self.ids: dict[int, tuple[str, int, int]] = {}  # section_id -> (idstr, instance, version)
        self.descs: dict[tuple[str, int], dict[str, Any]] = {}

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
        except Truncated as t:
            out.warnings.append(
                f"the stream ends at offset {self.base + self.end:#x} inside {t.what} "
                f"(from offset {self.base + t.offset:#x}); what was read before is used (truncated stream)"
            )
            pos = self.end
        finally:
            out.ram_records = self.ram.records
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
        for cap in _UNSUPPORTED_CAPABILITIES:
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
            self.ram.page_size = self.out.page_size
            self.ram.ignore_shared = "x-ignore-shared" in self.out.capabilities
            pos = self.ram.read(pos)
            return self._footer(pos, sid)
        if kind == QEMU_VM_SECTION_FULL:
            end = self._device_end(idstr, instance, sid, pos)
            section = DeviceSection(idstr, instance, version, sid, self.base + head, end - pos)
            self.out.sections.append(section)
            if idstr in (VMCOREINFO, VMGENID) and instance == 0:
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

    # -- device sections -----------------------------------------------------------------

    def _device_end(self, idstr: str, instance: int, sid: int, pos: int) -> int:
        desc = self.descs.get((idstr, instance))
        if desc is not None:
            try:
                end = self._vmsd_skip(desc, pos)
            except (Truncated, FormatError, KeyError, TypeError, ValueError):
                end = -1
            if end >= 0 and self._ends_here(end, sid):
                return end
        if self.out.footers is not False:
            try:
                return self._scan_footer(sid, pos, idstr)
            except FormatError:
                if self.out.footers:
                    raise
        for size in SECTION_SIZES.get(idstr, ()):
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
            return int(U32.unpack_from(self.buf, end + 1)[0]) == sid
        return self.out.footers is not True and self._plausible_next(end)

    def _scan_footer(self, sid: int, pos: int, idstr: str) -> int:
        pattern = re.compile(re.escape(bytes([QEMU_VM_SECTION_FOOTER]) + U32.pack(sid)))
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
            instance = int(U32.unpack_from(buf, pos + 6 + n)[0])
            return _PRINTABLE.fullmatch(name) is not None and instance < 1 << 16
        if kind in (QEMU_VM_SECTION_PART, QEMU_VM_SECTION_END):
            return pos + 5 <= end and int(U32.unpack_from(buf, pos + 1)[0]) in self.ids
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
        fields = [str(f.get("name")) for f in (self.descs.get((idstr, 0)) or {}).get("fields", ())]
        state = decode_section(idstr, raw, section_id=sid, version_id=version, offset=self.base + pos,
                               field_names=fields)
        if state.layout == "unknown":
            self.out.warnings.append(
                f"device section {idstr!r} has {len(raw)} bytes, a layout vmci does not know (kept raw)"
            )
        self.out.devices[idstr] = state

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
                if buf[at - 5] == QEMU_VM_VMDESCRIPTION and U32.unpack_from(buf, at - 4)[0] == end - at:
                    self._read_vmdesc(at, at - 5)
                    return
                brace = tail.find(b"{", brace + 1)
            if lo == 8:
                return

    def _read_vmdesc(self, at: int, head: int) -> None:
        if head + 5 > self.end:
            return
        length = int(U32.unpack_from(self.buf, head + 1)[0])
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
