"""QEMU device state shared by the address-blob and ACPI strategies and by the VM Generation ID:
the saved address blobs, the page they point into, and its OVMF-probe suppressor.

``etc/vmcoreinfo-addr`` (RFC device) and ``etc/vmgenid_addr`` hold page + offset as 8
little-endian bytes; the page starts with zeros that keep OVMF's SDT-header probe from
taking it for an ACPI table.  (These helpers belong with the machine's device knowledge,
``vmci.machine.qemu_devices``, once that exists.)
"""

from __future__ import annotations

from vmci.core.evidence import Evidence
from vmci.firmware.acpi import ovmf_probe
from vmci.layouts.fw_cfg import PAGE_BLOB_SIZE, RFC_OFFSET_V1, RFC_OFFSET_V2

#: The RFC page layouts: where the content starts after the suppressor.
RFC_OFFSETS = (RFC_OFFSET_V1, RFC_OFFSET_V2)
LAYOUT_NAMES = {RFC_OFFSET_V1: "40-byte suppressor (RFC v1, seed 001)",
                RFC_OFFSET_V2: "36-byte suppressor (later RFC revision)"}


def parse_addr_blob(blob: bytes, ev: Evidence, what: str = "address blob") -> int | None:
    """The 8-byte little-endian address, with QEMU's low-32-bit rule noted."""
    if len(blob) != 8:
        ev.fail("blob size", f"{what} is {len(blob)} bytes; the device keeps exactly 8 (le64)")
        return None
    addr = int.from_bytes(blob, "little")
    if addr == 0:
        ev.fail("blob value", f"{what} is zero: firmware never wrote the address (or the VM was reset)")
        return None
    ev.ok("blob value", f"{what} {blob.hex(' ')} = {addr:#x}", addr)
    if addr >> 32:
        ev.warn("blob value", f"high dword {addr >> 32:#x} set: QEMU reads only the low 32 bits "
                              f"({addr & 0xFFFFFFFF:#x})", addr)
    return addr


def page_of(addr: int, rfc_offset: int, ev: Evidence) -> int | None:
    """The page base for a blob value: ``addr - rfc_offset`` must be 4 KiB aligned."""
    page = addr - rfc_offset
    if page >= 0 and page % PAGE_BLOB_SIZE == 0:
        ev.ok("blob alignment", f"{addr:#x} = page {page:#x} + {rfc_offset} "
                                f"({LAYOUT_NAMES[rfc_offset]})", page)
        return page
    other = [o for o in RFC_OFFSETS if o != rfc_offset and (addr - o) % PAGE_BLOB_SIZE == 0]
    hint = (f"; it is page + {other[0]}: the {LAYOUT_NAMES[other[0]]} layout, read it with "
            f"rfc_offset={other[0]}") if other else ""
    ev.fail("blob alignment", f"{addr:#x} is not a 4 KiB page + {rfc_offset} "
                              f"(offset in page {addr % PAGE_BLOB_SIZE:#x}){hint}", addr)
    return None


def check_suppressor(page_bytes: bytes, page: int, size: int, ev: Evidence) -> None:
    """Bytes ``0 .. size-1`` must be zero; say which are not, and whether OVMF's probe bites."""
    head = page_bytes[:size]
    nonzero = [(i, b) for i, b in enumerate(head) if b]
    if not nonzero:
        ev.ok("suppressor", f"bytes 0-{size - 1} are zero (OVMF SDT header probe suppressor)", page)
    else:
        shown = ", ".join(f"+{i}={b:#04x}" for i, b in nonzero[:16])
        more = f" and {len(nonzero) - 16} more" if len(nonzero) > 16 else ""
        ev.warn("suppressor", f"{len(nonzero)} non-zero byte(s) in the suppressor: {shown}{more}", page)
    kind = ovmf_probe(page_bytes)
    if kind is not None:
        ev.fail("ovmf probe", f"the page would pass OVMF's {kind} header probe: firmware would "
                              "install it as an ACPI table and free the blob (the hazard the "
                              "suppressor exists for)", page)
