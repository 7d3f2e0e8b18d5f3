"""The VM Generation ID (seed 000): SSDT ``VMGENID`` / ``VGIA`` or the saved ``vmgenid_addr`` blob
-> the GUID page -> 16 bytes at page + 40, stored little-endian (first three fields swapped).

:func:`canonical` prints it as QMP ``query-vm-generation-id`` does: lowercase 8-4-4-4-12.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from vmci.analysis.result import VmgenidResult
from vmci.core.dump import Dump
from vmci.core.evidence import Evidence
from vmci.core.memory import PhysicalMemory
from vmci.errors import VmciError
from vmci.firmware.acpi import check_ovmf_probe, check_rsdp, find_named_dword, find_rsdp
from vmci.layouts.fw_cfg import (
    PAGE_BLOB_SIZE,
    RFC_OFFSET_V1,
    VMGENID_GUID_OFFSET,
    GuidLE,
    VmcoreinfoRfcContent,
)
from vmci.machine.qemu_devices import check_suppressor, page_of, parse_addr_blob

OEM_TABLE_ID = "VMGENID"
VAR = "VGIA"


def canonical(guid: uuid.UUID) -> str:
    """QMP's form: ``324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87``."""
    return str(guid)


def guid_from_ram(raw: bytes) -> uuid.UUID:
    """The GUID from its 16 bytes as the device stores them in guest RAM (little-endian fields)."""
    return GuidLE.parse(raw)


def find_vmgenid(mem: PhysicalMemory, *, addr_blob: bytes | None = None, scan_all: bool = True,
                 rsdp_address: int | None = None) -> VmgenidResult:
    """Find the GUID: through the saved blob when given, else through ACPI.

    ``rsdp_address`` reuses an RSDP found before.  The device's SSDT is reachable only through
    the RSDP, so the RSDP is looked for wherever a firmware puts it (:func:`find_rsdp`: EBDA,
    F-segment, EFI configuration table, RAM) whatever ``scan_all`` says: an OVMF guest's RSDP
    is never in the F-segment (``scan_all`` stays for callers; it no longer narrows the search).
    """
    ev = Evidence()
    if addr_blob is not None:
        addr = parse_addr_blob(bytes(addr_blob), ev, "vmgenid_addr blob")
        page = None if addr is None else page_of(addr & 0xFFFFFFFF, VMGENID_GUID_OFFSET, ev)
        if page is not None and not _blob_agrees(mem, page, ev):
            return VmgenidResult(None, None, "address-blob", ev)
        return _read_guid(mem, page, "address-blob", ev)
    rsdp = None
    if rsdp_address is not None:
        rsdp, sub = check_rsdp(mem, rsdp_address)
        ev.steps.extend(sub.steps)
        if rsdp is not None and not rsdp.valid:
            rsdp = None
    if rsdp is None:
        rsdp, sub = find_rsdp(mem, scan_all=True)
        ev.steps.extend(sub.steps)
    if rsdp is None:
        return VmgenidResult(None, None, None, ev)
    vgia, sub = find_named_dword(mem, OEM_TABLE_ID, VAR, rsdp)
    ev.steps.extend(sub.steps)
    if vgia is None:
        return VmgenidResult(None, None, None, ev)
    if vgia == 0 or vgia % PAGE_BLOB_SIZE:
        ev.fail("VGIA", f"VGIA {vgia:#x} is not a linked page address", vgia or None)
        return VmgenidResult(None, None, "acpi", ev)
    ev.ok("VGIA", f"page base {vgia:#x}", vgia)
    return _read_guid(mem, vgia, "acpi", ev)


def _blob_agrees(mem: PhysicalMemory, page: int, ev: Evidence) -> bool:
    """Check a user-supplied blob's page against what the dump itself says: the page firmware
    linked into ACPI (SSDT ``VMGENID``, ``VGIA``), the vmcoreinfo device's page (SSDT
    ``VMCOREIN``, ``VCIA``), and the page's own content (an RFC vmcoreinfo record naming a
    VMCOREINFO note is the other device's page).  A disagreement is a ``fail`` naming both."""
    rsdp, _ = find_rsdp(mem)
    if rsdp is not None:
        vgia, vsub = find_named_dword(mem, OEM_TABLE_ID, VAR, rsdp)
        vcia, _ = find_named_dword(mem, "VMCOREIN", "VCIA", rsdp)
        other = (" (it is the vmcoreinfo device's page, SSDT VMCOREIN, VCIA: the other device's blob)"
                 if vcia == page else "")
        if vgia is not None:
            if vgia != page:
                ev.fail("blob vs ACPI", f"the blob names page {page:#x}; the dump's ACPI (SSDT VMGENID, "
                                        f"VGIA) names page {vgia:#x}: the blob is not this VM's current "
                                        "vmgenid_addr (stale, another VM's, or another device's)" + other,
                        page)
                return False
            ev.ok("blob vs ACPI", f"the dump's ACPI (SSDT VMGENID, VGIA) names the same page {vgia:#x}", page)
            return True
        if vcia is not None and vcia == page:
            ev.fail("blob vs ACPI", f"page {page:#x} is the vmcoreinfo device's page (SSDT VMCOREIN, VCIA), "
                                    "not vmgenid's: the other device's blob?", page)
            return False
        tables = [s.detail for s in vsub.steps if s.action.startswith("SSDT with OEM table id")]
        ev.fail("blob vs ACPI", f"the blob names page {page:#x}, but the dump's ACPI tables have no SSDT "
                                f"VMGENID ({tables[0] if tables else 'none listed'}): no vmgenid device in "
                                "this VM", page)
        return False
    ev.info("blob vs ACPI", "no RSDP in the dump: the blob cannot be checked against ACPI")
    raw = _read_or_none(mem, page + RFC_OFFSET_V1, VmcoreinfoRfcContent.sizeof())
    if raw is not None:
        rec = VmcoreinfoRfcContent.parse(raw)
        note = _read_or_none(mem, rec.paddr, 24) if 0 < rec.size <= 1 << 20 else None
        if note is not None and note[12:23] == b"VMCOREINFO\0":
            ev.fail("page content", f"page {page:#x} holds an RFC vmcoreinfo record (paddr {rec.paddr:#x}, "
                                    f"size {rec.size}) naming a VMCOREINFO note: the vmcoreinfo device's "
                                    "page, not vmgenid's", page + RFC_OFFSET_V1)
            return False
    return True


def _read_or_none(mem: PhysicalMemory, paddr: int, n: int) -> bytes | None:
    try:
        return mem.read(paddr, n)
    except VmciError:
        return None


def _read_guid(mem: PhysicalMemory, page: int | None, source: Literal["acpi", "address-blob"],
               ev: Evidence) -> VmgenidResult:
    if page is None:
        return VmgenidResult(None, None, source, ev)
    try:
        raw = mem.read(page, PAGE_BLOB_SIZE)
    except VmciError:
        ev.fail("page readable", "the GUID page is not all in the dump", page)
        return VmgenidResult(None, None, source, ev)
    check_suppressor(raw, page, 36, ev)
    check_ovmf_probe(raw, page, ev)
    pad = raw[36:VMGENID_GUID_OFFSET]
    if any(pad):
        ev.warn("padding", f"alignment padding +36..+39 is {pad.hex(' ')}, not zero", page + 36)
    at = page + VMGENID_GUID_OFFSET
    guid = guid_from_ram(raw[VMGENID_GUID_OFFSET:VMGENID_GUID_OFFSET + 16])
    if guid.int == 0:
        ev.warn("guid", "the GUID is all zero (QEMU never wrote one?)", at)
    else:
        ev.ok("guid", f"{raw[at - page:at - page + 16].hex(' ')} in RAM = {canonical(guid)}", at)
    return VmgenidResult(guid, at, source, ev)


def find_vmgenid_in_dump(dump: Dump, *, addr_blob: bytes | None = None, **options: Any) -> VmgenidResult:
    """:func:`find_vmgenid` on a dump: a saved VM's own ``etc/vmgenid_addr`` (migration stream)
    serves as the blob when the caller gives none."""
    saved = dump.saved_state.devices.vmgenid_addr_blob if dump.saved_state else None
    if addr_blob is None:
        return find_vmgenid(dump.memory, addr_blob=saved, **options)
    found = find_vmgenid(dump.memory, addr_blob=addr_blob, **options)
    if saved is not None and bytes(saved) != bytes(addr_blob):
        found.evidence.fail("blob vs saved state", f"the blob given ({bytes(addr_blob).hex(' ')}) is not the "
                                                   f"saved VM's own vmgenid_addr ({bytes(saved).hex(' ')})")
        return VmgenidResult(None, None, "address-blob", found.evidence)
    return found
