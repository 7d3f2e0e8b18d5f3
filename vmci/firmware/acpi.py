"""Reading ACPI tables out of a dump's physical memory.

The walk QEMU's own vmgenid test does, generalised: find the RSDP (:func:`find_rsdp`: the EBDA and
the F-segment first, like a BIOS places it, then RAM, where a UEFI firmware such as OVMF puts it
and names it in the EFI configuration table), follow the XSDT or RSDT,
fetch tables with checksum checks, pick an SSDT by OEM table id and read the ``Name(XXXX,
DWordConst)`` that firmware patched with a blob address.

Every walking function returns ``(result, evidence)``: an
:class:`~vmci.discover.finding.Evidence` trail saying what was checked where, with what
verdict.  Garbage memory gives ``None`` and evidence, never an exception.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vmci.core.evidence import Evidence, Verdict
from vmci.core.memory import PhysicalMemory
from vmci.errors import FormatError, MemoryReadError, VmciError
from vmci.layouts.acpi import (
    FACS_SIZE,
    RSDP_SIGNATURE,
    RSDP_V1_SIZE,
    RSDP_V2_SIZE,
    SDT_HEADER_SIZE,
    RsdpV2,
    SdtHeader,
    checksum8,
    id_text,
)
from vmci.layouts.efi import (
    ACPI_10_TABLE_GUID,
    ACPI_20_TABLE_GUID,
    EFI_CONFIGURATION_TABLE64_SIZE,
    EFI_HEADER_CRC_OFFSET,
    EFI_SYSTEM_TABLE64_SIZE,
    EFI_SYSTEM_TABLE_SIGNATURE,
    EfiConfigurationTable64,
    EfiSystemTable64,
)

FSEG_START = 0xE0000
FSEG_END = 0x100000
BDA_EBDA_SEGMENT = 0x40E  # the BIOS Data Area word holding the EBDA's real-mode segment
EBDA_SEARCH = 1024  # the RSDP may be in the EBDA's first KiB (ACPI 6.5, 5.2.5.1)
EBDA_LOW, EBDA_HIGH = 0x80000, 0xA0000
MAX_RAM_HITS = 4096  # signature hits checked per buffer of a RAM search (bounds hostile memory)
MAX_EFI_ENTRIES = 1024  # configuration-table entries read from one EFI system table
MAX_TABLE_LENGTH = 16 << 20  # far above any real table; bounds reads of garbage lengths
MAX_ROOT_ENTRIES = 4096

OK: Verdict = "ok"
FAIL: Verdict = "fail"
INFO: Verdict = "info"


#: Step codes: the table looked for by signature and OEM table id was found (maybe with a bad
#: checksum) or is missing.
TABLE_FOUND = "acpi.table-found"
TABLE_MISSING = "acpi.table-missing"


def _step(ev: Evidence, paddr: int | None, action: str, verdict: Verdict, detail: str = "", *,
          code: str = "") -> None:
    ev.add(action, detail, verdict, paddr, code=code)


@dataclass(frozen=True)
class Rsdp:
    address: int
    revision: int
    oem_id: str
    rsdt_address: int
    xsdt_address: int | None  # None for revision < 2
    checksum_ok: bool
    extended_checksum_ok: bool | None  # None for revision < 2

    @property
    def valid(self) -> bool:
        return self.checksum_ok and self.extended_checksum_ok is not False


@dataclass(frozen=True)
class Table:
    address: int
    signature: str
    length: int
    revision: int
    oem_id: str
    oem_table_id: str
    checksum_ok: bool
    data: bytes

    @property
    def aml(self) -> bytes:
        return self.data[SDT_HEADER_SIZE:]


def _read(mem: PhysicalMemory, addr: int, n: int) -> bytes | None:
    try:
        return mem.read(addr, n)
    except (MemoryReadError, VmciError):
        return None


# -- RSDP ------------------------------------------------------------------------------------

def check_rsdp(mem: PhysicalMemory, addr: int) -> tuple[Rsdp | None, Evidence]:
    """Parse and validate an RSDP at ``addr`` (20 bytes, or 36 with the extended checksum)."""
    ev = Evidence()
    raw = _read(mem, addr, RSDP_V1_SIZE)
    if raw is None:
        _step(ev, addr, "RSDP readable", FAIL, "not in the dump")
        return None, ev
    if raw[:8] != RSDP_SIGNATURE:
        _step(ev, addr, "RSDP signature", FAIL, f"found {raw[:8]!r}")
        return None, ev
    ok1 = checksum8(raw) == 0
    _step(ev, addr, "RSDP checksum (20 bytes)", OK if ok1 else FAIL, f"sum {checksum8(raw):#04x}")
    revision = raw[15]
    ext_ok: bool | None = None
    xsdt: int | None = None
    if revision >= 2:
        full = _read(mem, addr, RSDP_V2_SIZE)
        if full is None:
            _step(ev, addr, "RSDP 2.0 fields readable", FAIL, "not in the dump")
            ext_ok = False
        else:
            rsdp2 = RsdpV2.parse(full)
            xsdt = rsdp2.xsdt_address
            length = rsdp2.length
            body = _read(mem, addr, length) if RSDP_V2_SIZE <= length <= 4096 else None
            ext_ok = body is not None and checksum8(body) == 0
            detail = "length out of range or unreadable" if body is None else f"sum {checksum8(body):#04x}"
            _step(ev, addr, f"RSDP extended checksum ({length} bytes)", OK if ext_ok else FAIL, detail)
    rsdp = Rsdp(addr, revision, id_text(raw[9:15]), int.from_bytes(raw[16:20], "little"), xsdt, ok1, ext_ok)
    _step(ev, addr, "RSDP", OK if rsdp.valid else FAIL,
          f"revision {revision}, RSDT {rsdp.rsdt_address:#x}"
          + (f", XSDT {xsdt:#x}" if xsdt is not None else ""))
    return rsdp, ev


def _haystack(buf: bytes | bytearray | memoryview) -> bytes | bytearray:
    """Something with ``find``: the buffer's own object when a view covers all of it (no copy)."""
    if isinstance(buf, memoryview):
        obj = buf.obj
        if isinstance(obj, bytes | bytearray) and buf.nbytes == len(obj) and buf.c_contiguous:
            return obj
        return buf.tobytes()
    return buf


def scan_signature(mem: PhysicalMemory, signature: bytes, start: int = 0, end: int | None = None,
                   align: int = 16) -> Iterator[int]:
    """Addresses in ``[start, end)`` where ``signature`` starts at an ``align``-aligned offset.

    Hits that straddle two chunks are found through a small window over the seam.  A signature
    without NUL bytes cannot lie in memory known to be zero, so only the stretches that hold
    data are searched (:meth:`PhysicalMemory.data_chunks`): the work follows the bytes stored.
    """
    keep = len(signature) - 1
    tail = b""
    prev_end = None
    walk = mem.data_chunks if 0 not in signature else mem.chunks
    for addr, buf in walk(start, end):
        data = _haystack(buf)
        if addr == prev_end and tail:
            window = tail + bytes(data[:keep])
            i = window.find(signature)
            while -1 < i < len(tail):
                if (addr - len(tail) + i) % align == 0:
                    yield addr - len(tail) + i
                i = window.find(signature, i + 1)
        else:
            tail = b""
        i = data.find(signature)
        while i != -1:
            if (addr + i) % align == 0:
                yield addr + i
            i = data.find(signature, i + 1)
        tail = bytes(data[-keep:]) if len(data) >= keep else (tail + bytes(data))[-keep:]
        prev_end = addr + len(data)


def ebda_base(mem: PhysicalMemory) -> int | None:
    """The Extended BIOS Data Area, from the segment the BIOS Data Area keeps at 0x40E; None
    unless it lies where an EBDA can (below 640 KiB, above 512 KiB)."""
    raw = _read(mem, BDA_EBDA_SEGMENT, 2)
    if raw is None:
        return None
    base = int.from_bytes(raw, "little") << 4
    return base if EBDA_LOW <= base < EBDA_HIGH else None


def _rsdp_words(mem: PhysicalMemory, needles: tuple[bytes, ...]) -> Iterator[list[tuple[int, int]]]:
    """Per buffer of the memory that holds data, the ``(address, needle index)`` of every
    8-byte-aligned 8-byte ``needle``, in address order (numpy compares whole buffers as words;
    a needle across two buffers is found through a window over the seam)."""
    import numpy as np

    values = [int.from_bytes(n, "little") for n in needles]
    prev_end = None
    tail = b""
    for addr, buf in mem.data_chunks(max_size=16 << 20):
        mv = memoryview(buf).cast("B") if isinstance(buf, memoryview) else memoryview(buf)
        hits: list[tuple[int, int]] = []
        if addr == prev_end and tail:
            window = tail + bytes(mv[:7])
            for k, n in enumerate(needles):
                i = window.find(n)
                while -1 < i < len(tail):
                    if (addr - len(tail) + i) % 8 == 0:
                        hits.append((addr - len(tail) + i, k))
                    i = window.find(n, i + 1)
        lead = -addr % 8
        count = max(0, (len(mv) - lead) // 8)
        if count:
            words = np.frombuffer(mv, dtype="<u8", count=count, offset=lead)
            for k, v in enumerate(values):
                hits += [(addr + lead + 8 * int(i), k) for i in np.flatnonzero(words == v)[:MAX_RAM_HITS]]
        tail = bytes(mv[-7:]) if len(mv) >= 7 else (tail + bytes(mv))[-7:]
        prev_end = addr + len(mv)
        yield sorted(hits)


def _efi_entry(mem: PhysicalMemory, at: int) -> tuple[str, int] | None:
    """("2.0"/"1.0", RSDP address) of an EFI configuration-table entry for ACPI at ``at``."""
    raw = _read(mem, at, EFI_CONFIGURATION_TABLE64_SIZE)
    if raw is None:
        return None
    entry = EfiConfigurationTable64.parse(raw)
    kinds = {ACPI_20_TABLE_GUID.bytes_le: "2.0", ACPI_10_TABLE_GUID.bytes_le: "1.0"}
    kind = kinds.get(entry.vendor_guid)
    return None if kind is None else (kind, entry.vendor_table)


def efi_system_table(mem: PhysicalMemory, at: int) -> tuple[Any, Evidence]:
    """The EFI system table at ``at`` if its header CRC32 holds (UEFI 2.10, 4.2.1), with the
    ACPI entries of its configuration table when that is reachable at a physical address."""
    ev = Evidence()
    raw = _read(mem, at, EFI_SYSTEM_TABLE64_SIZE)
    if raw is None:
        return None, ev
    st = EfiSystemTable64.parse(raw)
    size = st.hdr.header_size
    body = _read(mem, at, size) if EFI_SYSTEM_TABLE64_SIZE <= size <= 4096 else None
    if body is None:
        return None, ev
    crc = bytearray(body)
    crc[EFI_HEADER_CRC_OFFSET:EFI_HEADER_CRC_OFFSET + 4] = bytes(4)
    if zlib.crc32(crc) != st.hdr.crc32:
        return None, ev
    rev = st.hdr.revision
    n, table = st.number_of_table_entries, st.configuration_table
    _step(ev, at, "EFI system table", OK,
          f"revision {rev >> 16}.{rev & 0xFFFF}, CRC32 holds, {n} configuration entr"
          f"{'y' if n == 1 else 'ies'} at {table:#x}")
    return st, ev


def find_rsdp(mem: PhysicalMemory, *, scan_all: bool = True) -> tuple[Rsdp | None, Evidence]:
    """The RSDP wherever the firmware put it (ACPI 6.5, 5.2.5): a BIOS puts it in the first KiB
    of the EBDA or in the F-segment (0xE0000-0xFFFFF), searched first; a UEFI firmware anywhere
    in RAM, named by the ACPI entries of the EFI configuration table.  With ``scan_all`` RAM is
    searched in one walk over the memory that holds data (never page by page through what a
    header only describes): EFI system tables, configuration-table entries for ACPI 2.0/1.0
    and RSDP signatures, 16-byte aligned on a PC, 8-byte aligned on a machine without RAM at the
    F-segment (Arm ``virt``: edk2's AcpiTableDxe allocates the RSDP from pool memory, MdeModulePkg
    AcpiTableProtocol.c).  An RSDP the EFI configuration table names (ACPI 2.0
    first) wins over a bare signature, which may be a stale copy (OVMF leaves QEMU's own RSDP
    blob behind), and ends the walk; else the first valid signature in RAM is the answer."""
    ev = Evidence()
    seen: set[int] = set()
    areas = [(FSEG_START, FSEG_END, "F-segment")]
    ebda = ebda_base(mem)
    if ebda is not None:
        areas.insert(0, (ebda, ebda + EBDA_SEARCH, "EBDA"))
    for start, end, what in areas:
        found = 0
        for cand in scan_signature(mem, RSDP_SIGNATURE, start, end):
            if cand in seen:
                continue
            seen.add(cand)
            found += 1
            rsdp, sub = check_rsdp(mem, cand)
            ev.steps.extend(sub.steps)
            if rsdp is not None and rsdp.valid:
                _step(ev, cand, f"RSDP search in {what}", OK, "valid RSDP")
                return rsdp, ev
        if what != "EBDA" or found:
            _step(ev, start, f"RSDP search in {what}", INFO,
                  f"{found} candidate(s) with the signature, none valid")
    if scan_all:
        rsdp = _find_rsdp_in_ram(mem, ev, seen, align=16 if mem.contains(FSEG_START, 1) else 8)
        if rsdp is not None:
            return rsdp, ev
    _step(ev, None, "RSDP", FAIL, "no valid RSDP in the dump")
    return None, ev


def _find_rsdp_in_ram(mem: PhysicalMemory, ev: Evidence, seen: set[int], align: int) -> Rsdp | None:
    needles = (RSDP_SIGNATURE, EFI_SYSTEM_TABLE_SIGNATURE, ACPI_20_TABLE_GUID.bytes_le[:8],
               ACPI_10_TABLE_GUID.bytes_le[:8])
    found = checked = 0
    bare: list[Rsdp] = []
    for hits in _rsdp_words(mem, needles):
        named: list[tuple[str, int, int]] = []  # (kind, entry address, RSDP address)
        for at, k in hits:
            if k == 0:
                if at % align or at in seen or bare:  # after the first valid one only named ones count
                    continue
                seen.add(at)
                found += 1
                rsdp, sub = check_rsdp(mem, at)
                if checked < MAX_RAM_HITS:
                    ev.steps.extend(sub.steps)
                checked += 1
                if rsdp is not None and rsdp.valid and not bare:
                    bare.append(rsdp)
            elif k == 1:
                st, sub = efi_system_table(mem, at)
                if st is None:
                    continue
                ev.steps.extend(sub.steps)
                n = min(st.number_of_table_entries, MAX_EFI_ENTRIES)
                table = _read(mem, st.configuration_table, n * EFI_CONFIGURATION_TABLE64_SIZE) if n else None
                if table is None:
                    _step(ev, at, "EFI configuration table", INFO,
                          f"{st.configuration_table:#x} is not a physical address in the dump (a virtual "
                          "one after SetVirtualAddressMap()): its entries are looked for by their GUIDs")
                    continue
                for i in range(n):
                    entry = _efi_entry(mem, st.configuration_table + i * EFI_CONFIGURATION_TABLE64_SIZE)
                    if entry is not None:
                        named.append((entry[0], st.configuration_table + i * EFI_CONFIGURATION_TABLE64_SIZE,
                                      entry[1]))
            else:
                entry = _efi_entry(mem, at)
                if entry is not None:
                    named.append((entry[0], at, entry[1]))
        for kind, at, target in sorted(named, key=lambda e: e[0] != "2.0"):
            rsdp, sub = check_rsdp(mem, target)
            if rsdp is not None and rsdp.valid:
                ev.steps.extend(sub.steps)
                _step(ev, at, "RSDP via the EFI configuration table", OK,
                      f"the ACPI {kind} entry names a valid RSDP at {target:#x}")
                return rsdp
            _step(ev, at, "RSDP via the EFI configuration table", INFO,
                  f"the ACPI {kind} entry names {target:#x}: no valid RSDP there")
    if bare:
        _step(ev, bare[0].address, "RSDP search in all RAM", OK, "valid RSDP")
        return bare[0]
    _step(ev, 0, "RSDP search in all RAM", INFO, f"{found} candidate(s) with the signature, none valid")
    return None


def all_rsdps(mem: PhysicalMemory) -> list[Rsdp]:
    """Every RSDP candidate in RAM (valid or not), e.g. stale copies OVMF left behind."""
    out = []
    for cand in scan_signature(mem, RSDP_SIGNATURE):
        rsdp, _ = check_rsdp(mem, cand)
        if rsdp is not None:
            out.append(rsdp)
    return out


# -- tables ----------------------------------------------------------------------------------

def fetch_table(
    mem: PhysicalMemory, addr: int, signature: str | None = None
) -> tuple[Table | None, Evidence]:
    """The table at ``addr``; ``None`` if unreadable, impossibly sized or of another signature.

    A bad checksum still returns the table, with ``checksum_ok`` false and a ``fail`` step.
    """
    ev = Evidence()
    raw = _read(mem, addr, SDT_HEADER_SIZE)
    if raw is None:
        _step(ev, addr, "table header readable", FAIL, "not in the dump")
        return None, ev
    hdr = SdtHeader.parse(raw)
    sig = hdr.signature.decode("latin-1")
    if signature is not None and hdr.signature != signature.encode("latin-1"):
        _step(ev, addr, f"signature {signature}", FAIL, f"found {hdr.signature!r}")
        return None, ev
    if not SDT_HEADER_SIZE <= hdr.length <= MAX_TABLE_LENGTH:
        _step(ev, addr, f"{sig!r} length", FAIL, f"{hdr.length} is outside 36..{MAX_TABLE_LENGTH}")
        return None, ev
    data = _read(mem, addr, hdr.length)
    if data is None:
        _step(ev, addr, f"{sig} readable", FAIL, f"{hdr.length} bytes not all in the dump")
        return None, ev
    ok = checksum8(data) == 0
    oem, table_id = id_text(hdr.oem_id), id_text(hdr.oem_table_id)
    table = Table(addr, sig, hdr.length, hdr.revision, oem, table_id, ok, data)
    detail = f"length {hdr.length}, OEM {oem!r}/{table_id!r}, sum {checksum8(data):#04x}"
    _step(ev, addr, f"{sig} checksum", OK if ok else FAIL, detail)
    return table, ev


def root_entries(table: Table) -> tuple[list[int], Evidence]:
    """Entry addresses of an RSDT (4 bytes each) or XSDT (8 bytes each)."""
    size = 8 if table.signature == "XSDT" else 4
    body = table.aml
    count = min(len(body) // size, MAX_ROOT_ENTRIES)
    entries = [int.from_bytes(body[i * size : (i + 1) * size], "little") for i in range(count)]
    ev = Evidence()
    _step(ev, table.address, f"{table.signature} entries", OK if entries else FAIL,
          f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} of {size} bytes"
          + (f", {len(body) % size} trailing byte(s)" if len(body) % size else ""))
    return entries, ev


def list_tables(mem: PhysicalMemory, rsdp: Rsdp) -> tuple[list[Table], Evidence]:
    """Tables listed by the XSDT (revision >= 2 and valid) or else the RSDT."""
    ev = Evidence()
    root: Table | None = None
    if rsdp.xsdt_address:
        root, sub = fetch_table(mem, rsdp.xsdt_address, "XSDT")
        ev.steps.extend(sub.steps)
        if root is not None and not root.checksum_ok:
            root = None
        if root is None:
            _step(ev, rsdp.xsdt_address, "XSDT usable", FAIL, "falling back to the RSDT")
    if root is None:
        root, sub = fetch_table(mem, rsdp.rsdt_address, "RSDT")
        ev.steps.extend(sub.steps)
        if root is None:
            return [], ev
    entries, sub = root_entries(root)
    ev.steps.extend(sub.steps)
    tables: list[Table] = []
    for addr in dict.fromkeys(entries):
        table, sub = fetch_table(mem, addr)
        ev.steps.extend(sub.steps)
        if table is not None:
            tables.append(table)
    return tables, ev


def _norm_id(text: str) -> str:
    return text.rstrip("\0 ")


def find_ssdt(mem: PhysicalMemory, oem_table_id: str, rsdp: Rsdp | None = None,
              signature: str = "SSDT") -> tuple[Table | None, Evidence]:
    """The table with ``signature`` and OEM table id ``oem_table_id`` (NUL/space padding ignored).

    Prefers a match whose checksum is valid; a bad-checksum match is returned only if it is
    the only one (its ``fail`` step stays in the evidence).
    """
    ev = Evidence()
    if rsdp is None:
        rsdp, sub = find_rsdp(mem)
        ev.steps.extend(sub.steps)
        if rsdp is None:
            return None, ev
    tables, sub = list_tables(mem, rsdp)
    ev.steps.extend(sub.steps)
    want = _norm_id(oem_table_id)
    matches = [t for t in tables if t.signature == signature and _norm_id(t.oem_table_id) == want]
    if not matches:
        _step(ev, None, f"{signature} with OEM table id {oem_table_id!r}", FAIL,
              f"not among {len(tables)} table(s): " + ", ".join(
              f"{t.signature}/{t.oem_table_id}" for t in tables), code=TABLE_MISSING)
        return None, ev
    best = next((t for t in matches if t.checksum_ok), matches[0])
    _step(ev, best.address, f"{signature} with OEM table id {oem_table_id!r}",
          OK if best.checksum_ok else FAIL, "found" if best.checksum_ok else "found, bad checksum",
          code=TABLE_FOUND)
    return best, ev


# -- AML: just enough to read Name(XXXX, DWordConst) ---------------------------------------------

def decode_pkg_length(buf: bytes, off: int = 0) -> tuple[int, int]:
    """(value, number of PkgLength bytes) at ``buf[off]``."""
    if off >= len(buf):
        raise FormatError("PkgLength past end of AML", field="PkgLength", offset=off)
    lead = buf[off]
    follow = lead >> 6
    if follow == 0:
        return lead & 0x3F, 1
    if lead & 0x30 or off + 1 + follow > len(buf):
        raise FormatError("bad PkgLength lead byte or truncated", field="PkgLength", offset=off)
    value = lead & 0x0F
    for i in range(follow):
        value |= buf[off + 1 + i] << (4 + 8 * i)
    return value, 1 + follow


_NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"


def _seg(buf: bytes, off: int) -> str:
    seg = buf[off : off + 4]
    if len(seg) < 4 or not all(c in _NAME_CHARS for c in seg) or seg[:1].isdigit():
        raise FormatError(f"bad NameSeg {seg!r}", field="NameSeg", offset=off)
    return seg.decode("ascii")


def decode_name_string(buf: bytes, off: int = 0) -> tuple[str, int]:
    """(path, offset after it); segments are kept 4 characters long (``_SB_``)."""
    prefix = ""
    if off < len(buf) and buf[off] == 0x5C:
        prefix, off = "\\", off + 1
    else:
        while off < len(buf) and buf[off] == 0x5E:
            prefix, off = prefix + "^", off + 1
    if off >= len(buf):
        raise FormatError("NameString past end of AML", field="NameString", offset=off)
    op = buf[off]
    if op == 0x00:
        return prefix, off + 1
    if op == 0x2E:
        count, off = 2, off + 1
    elif op == 0x2F:
        if off + 1 >= len(buf):
            raise FormatError("truncated MultiNamePrefix", field="NameString", offset=off)
        count, off = buf[off + 1], off + 2
    else:
        count = 1
    segs = [_seg(buf, off + 4 * i) for i in range(count)]
    return prefix + ".".join(segs), off + 4 * count


_INT_SIZES = {0x0A: 1, 0x0B: 2, 0x0C: 4, 0x0E: 8}
INT_KINDS = {0x00: "Zero", 0x01: "One", 0xFF: "Ones", 0x0A: "ByteConst", 0x0B: "WordConst",
             0x0C: "DWordConst", 0x0E: "QWordConst"}


def decode_integer(buf: bytes, off: int = 0) -> tuple[int, str, int]:
    """(value, kind name, offset after it) of an integer data object at ``buf[off]``."""
    if off >= len(buf) or buf[off] not in INT_KINDS:
        found = f"{buf[off]:#04x}" if off < len(buf) else "end of AML"
        raise FormatError(f"expected an integer constant, found {found}", field="integer", offset=off)
    op = buf[off]
    if op == 0x00:
        return 0, "Zero", off + 1
    if op == 0x01:
        return 1, "One", off + 1
    if op == 0xFF:
        return (1 << 64) - 1, "Ones", off + 1
    size = _INT_SIZES[op]
    if off + 1 + size > len(buf):
        raise FormatError(f"truncated {INT_KINDS[op]}", field=INT_KINDS[op], offset=off)
    return int.from_bytes(buf[off + 1 : off + 1 + size], "little"), INT_KINDS[op], off + 1 + size


def parse_leading_name(aml: bytes) -> tuple[str, int, str, int]:
    """The ``Name`` at the start of ``aml``: (name, value, integer kind, offset of the value bytes)."""
    if not aml or aml[0] != 0x08:
        raise FormatError("AML does not start with a NameOp (0x08)", field="NameOp", offset=0)
    name, off = decode_name_string(aml, 1)
    value, kind, _ = decode_integer(aml, off)
    return name, value, kind, off + 1


def leading_name_dword(table: Table, name: str | None = None) -> tuple[int | None, Evidence]:
    """The value of the table's leading ``Name(XXXX, DWordConst)`` (``name`` checked if given)."""
    ev = Evidence()
    where = table.address + SDT_HEADER_SIZE
    try:
        found, value, kind, voff = parse_leading_name(table.aml)
    except FormatError as err:
        _step(ev, where + (err.offset or 0), "leading Name(...) in AML", FAIL, str(err))
        return None, ev
    if name is not None and found != name:
        _step(ev, where, f"leading Name is {name}", FAIL, f"found {found}")
        return None, ev
    if kind != "DWordConst":
        _step(ev, where, f"{found} is a DWordConst", FAIL, f"found {kind} = {value:#x}")
        return None, ev
    _step(ev, where + voff, f"Name({found}, DWordConst)", OK, f"{found} = {value:#x}")
    return value, ev


def find_named_dword(mem: PhysicalMemory, oem_table_id: str, name: str,
                     rsdp: Rsdp | None = None) -> tuple[int | None, Evidence]:
    """RSDP -> RSDT/XSDT -> SSDT(oem_table_id) -> leading Name(name, DWordConst): e.g. VCIA, VGIA."""
    table, ev = find_ssdt(mem, oem_table_id, rsdp)
    if table is None:
        return None, ev
    value, sub = leading_name_dword(table, name)
    ev.steps.extend(sub.steps)
    return value, ev


# -- the hazard the probe suppressor exists for -----------------------------------------------

def ovmf_probe(data: bytes | bytearray | memoryview) -> str | None:
    """What OVMF's second-pass probe sees in ``data`` (its length = the blob bytes remaining):
    ``"FACS"``, ``"SDT"``, or ``None`` (OVMF then keeps the blob as opaque)."""
    remaining = len(data)
    if remaining < SDT_HEADER_SIZE:
        return None
    length = int.from_bytes(bytes(data[4:8]), "little")
    if remaining >= FACS_SIZE and bytes(data[:4]) == b"FACS" and FACS_SIZE <= length <= remaining:
        return "FACS"
    if SDT_HEADER_SIZE <= length <= remaining and checksum8(data[:length]) == 0:
        return "SDT"
    return None


def check_ovmf_probe(page_bytes: bytes, page: int, ev: Evidence) -> None:
    """Fail when OVMF's probe would take a device page (vmcoreinfo RFC, vmgenid) for a table: the
    hazard the page's suppressor exists for (:func:`vmci.machine.qemu_devices.check_suppressor`)."""
    kind = ovmf_probe(page_bytes)
    if kind is not None:
        ev.fail("ovmf probe", f"the page would pass OVMF's {kind} header probe: firmware would "
                              "install it as an ACPI table and free the blob (the hazard the "
                              "suppressor exists for)", page)


def ovmf_probe_at(mem: PhysicalMemory, addr: int, remaining: int = 4096) -> tuple[str | None, Evidence]:
    """:func:`ovmf_probe` on ``remaining`` bytes at ``addr`` (e.g. a vmgenid/vmcoreinfo page)."""
    data = _read(mem, addr, max(0, min(remaining, MAX_TABLE_LENGTH)))
    if data is None:
        ev = Evidence()
        _step(ev, addr, "OVMF header probe", FAIL, f"{remaining} bytes not all in the dump")
        return None, ev
    kind = ovmf_probe(data)
    verdict = OK if kind is None else FAIL
    detail = "would be kept as opaque data" if kind is None else f"would be taken for an ACPI {kind} table"
    ev = Evidence()
    _step(ev, addr, "OVMF header probe", verdict, detail)
    return kind, ev
