"""OVMF's probe for ACPI tables in what QEMU's linker/loader hands it: the hazard the
vmcoreinfo device's 40-byte suppressor exists for."""

from __future__ import annotations

from vmci.core.evidence import Evidence
from vmci.core.memory import PhysicalMemory
from vmci.firmware.acpi.model import FAIL, MAX_TABLE_LENGTH, OK, add_step, read_or_none
from vmci.layouts.acpi import (
    FACS_SIZE,
    SDT_HEADER_SIZE,
    checksum8,
)

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
    data = read_or_none(mem, addr, max(0, min(remaining, MAX_TABLE_LENGTH)))
    if data is None:
        ev = Evidence()
        add_step(ev, addr, "OVMF header probe", FAIL, f"{remaining} bytes not all in the dump")
        return None, ev
    kind = ovmf_probe(data)
    verdict = OK if kind is None else FAIL
    detail = "would be kept as opaque data" if kind is None else f"would be taken for an ACPI {kind} table"
    ev = Evidence()
    add_step(ev, addr, "OVMF header probe", verdict, detail)
    return kind, ev
