"""Finding the RSDP wherever firmware put it: EBDA, F-segment, RAM, the EFI configuration table."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

from vmci.core.evidence import Evidence
from vmci.core.memory import PhysicalMemory
from vmci.firmware.acpi.model import (
    BDA_EBDA_SEGMENT,
    EBDA_HIGH,
    EBDA_LOW,
    EBDA_SEARCH,
    FAIL,
    FSEG_END,
    FSEG_START,
    INFO,
    MAX_EFI_ENTRIES,
    MAX_RAM_HITS,
    OK,
    Rsdp,
    add_step,
    read_or_none,
)
from vmci.layouts.acpi import (
    RSDP_SIGNATURE,
    RSDP_V1_SIZE,
    RSDP_V2_SIZE,
    RsdpV2,
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

# -- RSDP ------------------------------------------------------------------------------------

def check_rsdp(mem: PhysicalMemory, addr: int) -> tuple[Rsdp | None, Evidence]:
    """Parse and validate an RSDP at ``addr`` (20 bytes, or 36 with the extended checksum)."""
    ev = Evidence()
    raw = read_or_none(mem, addr, RSDP_V1_SIZE)
    if raw is None:
        add_step(ev, addr, "RSDP readable", FAIL, "not in the dump")
        return None, ev
    if raw[:8] != RSDP_SIGNATURE:
        add_step(ev, addr, "RSDP signature", FAIL, f"found {raw[:8]!r}")
        return None, ev
    ok1 = checksum8(raw) == 0
    add_step(ev, addr, "RSDP checksum (20 bytes)", OK if ok1 else FAIL, f"sum {checksum8(raw):#04x}")
    revision = raw[15]
    ext_ok: bool | None = None
    xsdt: int | None = None
    if revision >= 2:
        full = read_or_none(mem, addr, RSDP_V2_SIZE)
        if full is None:
            add_step(ev, addr, "RSDP 2.0 fields readable", FAIL, "not in the dump")
            ext_ok = False
        else:
            rsdp2 = RsdpV2.parse(full)
            xsdt = rsdp2.xsdt_address
            length = rsdp2.length
            body = read_or_none(mem, addr, length) if RSDP_V2_SIZE <= length <= 4096 else None
            ext_ok = body is not None and checksum8(body) == 0
            detail = "length out of range or unreadable" if body is None else f"sum {checksum8(body):#04x}"
            add_step(ev, addr, f"RSDP extended checksum ({length} bytes)", OK if ext_ok else FAIL, detail)
    rsdp = Rsdp(addr, revision, id_text(raw[9:15]), int.from_bytes(raw[16:20], "little"), xsdt, ok1, ext_ok)
    add_step(ev, addr, "RSDP", OK if rsdp.valid else FAIL,
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
    raw = read_or_none(mem, BDA_EBDA_SEGMENT, 2)
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
    raw = read_or_none(mem, at, EFI_CONFIGURATION_TABLE64_SIZE)
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
    raw = read_or_none(mem, at, EFI_SYSTEM_TABLE64_SIZE)
    if raw is None:
        return None, ev
    st = EfiSystemTable64.parse(raw)
    size = st.hdr.header_size
    body = read_or_none(mem, at, size) if EFI_SYSTEM_TABLE64_SIZE <= size <= 4096 else None
    if body is None:
        return None, ev
    crc = bytearray(body)
    crc[EFI_HEADER_CRC_OFFSET:EFI_HEADER_CRC_OFFSET + 4] = bytes(4)
    if zlib.crc32(crc) != st.hdr.crc32:
        return None, ev
    rev = st.hdr.revision
    n, table = st.number_of_table_entries, st.configuration_table
    add_step(ev, at, "EFI system table", OK,
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
                add_step(ev, cand, f"RSDP search in {what}", OK, "valid RSDP")
                return rsdp, ev
        if what != "EBDA" or found:
            add_step(ev, start, f"RSDP search in {what}", INFO,
                  f"{found} candidate(s) with the signature, none valid")
    if scan_all:
        rsdp = _find_rsdp_in_ram(mem, ev, seen, align=16 if mem.contains(FSEG_START, 1) else 8)
        if rsdp is not None:
            return rsdp, ev
    add_step(ev, None, "RSDP", FAIL, "no valid RSDP in the dump")
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
                size = n * EFI_CONFIGURATION_TABLE64_SIZE
                table = read_or_none(mem, st.configuration_table, size) if n else None
                if table is None:
                    add_step(ev, at, "EFI configuration table", INFO,
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
                add_step(ev, at, "RSDP via the EFI configuration table", OK,
                      f"the ACPI {kind} entry names a valid RSDP at {target:#x}")
                return rsdp
            add_step(ev, at, "RSDP via the EFI configuration table", INFO,
                  f"the ACPI {kind} entry names {target:#x}: no valid RSDP there")
    if bare:
        add_step(ev, bare[0].address, "RSDP search in all RAM", OK, "valid RSDP")
        return bare[0]
    add_step(ev, 0, "RSDP search in all RAM", INFO, f"{found} candidate(s) with the signature, none valid")
    return None


def all_rsdps(mem: PhysicalMemory) -> list[Rsdp]:
    """Every RSDP candidate in RAM (valid or not), e.g. stale copies OVMF left behind."""
    out = []
    for cand in scan_signature(mem, RSDP_SIGNATURE):
        rsdp, _ = check_rsdp(mem, cand)
        if rsdp is not None:
            out.append(rsdp)
    return out


