"""The state QEMU's vmcoreinfo and vmgenid devices keep outside guest RAM, and what it means.

- Upstream ``-device vmcoreinfo`` (QEMU >= 2.11, hw/misc/vmcoreinfo.c, ``vmstate_vmcoreinfo``):
  ``has_vmcoreinfo`` and the ``etc/vmcoreinfo`` fw_cfg record the guest wrote (format, size and
  address of its VMCOREINFO note), migrated as 17 big-endian bytes.
- The 2017 RFC ``-device vmcoreinfo`` and ``-device vmgenid`` (hw/acpi/vmgenid.c): firmware
  allocates a 4 KiB page and writes its address plus an offset back into an 8-byte
  little-endian address blob (``etc/vmcoreinfo-addr``, ``vmgenid_addr``), which is migrated.
  The page starts with a suppressor: zero bytes covering an ACPI table header, so that OVMF's
  table probe does not take the page for a table.  The RFC page holds the note's version,
  address and size after the suppressor, at +40 (:data:`~vmci.layouts.fw_cfg.RFC_OFFSET_V1`) or
  +36 in the later revision; vmgenid's GUID is at +40.

:func:`decode_section` turns a device section's payload into a typed
:class:`~vmci.core.saved_state.DeviceState`; :func:`parse_addr_blob`, :func:`page_of` and
:func:`check_suppressor` check an address blob and its page, step by step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vmci.layouts.fw_cfg import PAGE_BLOB_SIZE, RFC_OFFSET_V1, RFC_OFFSET_V2
from vmci.layouts.migration import VmcoreinfoRfcSection, VmcoreinfoSection, VmgenidSection

if TYPE_CHECKING:  # kept off discovery's import path (start-up): the checks only call methods
    from vmci.core.evidence import Evidence
    from vmci.core.saved_state import DeviceState

#: the RFC page layouts: where the content starts in the page
RFC_OFFSETS = (RFC_OFFSET_V1, RFC_OFFSET_V2)
RFC_LAYOUT_NAMES = {RFC_OFFSET_V1: "40-byte suppressor (RFC v1, seed 001)",
                    RFC_OFFSET_V2: "36-byte suppressor (later RFC revision)"}
VMCOREINFO = "vmcoreinfo"
VMGENID = "vmgenid"
#: the payload sizes each device's section can have (what a reader without a VM description
#: tries when looking for the section's end)
SECTION_SIZES = {
    VMGENID: (VmgenidSection.sizeof(),),
    VMCOREINFO: (VmcoreinfoSection.sizeof(), VmcoreinfoRfcSection.sizeof()),
}
ADDR_BLOB_SIZE = VmgenidSection.sizeof()


#: QEMU's dump.c dump_init() ignores a guest note larger than this (MAX_GUEST_NOTE_SIZE, 1 MiB).
MAX_GUEST_NOTE_SIZE = 1 << 20

def decode_section(idstr: str, raw: bytes, *, section_id: int, version_id: int, offset: int,
                   field_names: Sequence[str] = ()) -> DeviceState:
    """The device state in the payload ``raw`` of a ``vmcoreinfo`` or ``vmgenid`` section.

    ``field_names`` are the section's fields in the stream's VM description (empty without
    one); ``offset`` is the payload's file offset.  A payload of another size keeps ``layout``
    ``"unknown"`` (and only its raw bytes).
    """
    from vmci.core.saved_state import DeviceState, VmcoreinfoRecord  # only a stream reader needs them

    def state(**decoded: Any) -> DeviceState:
        return DeviceState(idstr, section_id, 0, version_id, offset, raw, **decoded)

    if idstr == VMGENID and len(raw) == VmgenidSection.sizeof():
        return state(addr_blob=raw)
    if (idstr == VMCOREINFO and len(raw) == VmcoreinfoSection.sizeof() and raw[0] in (0, 1)
            and (not field_names or "has_vmcoreinfo" in field_names)):
        rec = VmcoreinfoSection.parse(raw)
        record = VmcoreinfoRecord(host_format=rec.host_format, guest_format=rec.guest_format,
                                  size=rec.size, paddr=rec.paddr, has_vmcoreinfo=rec.has_vmcoreinfo)
        return state(layout="upstream", record=record)
    if idstr == VMCOREINFO and len(raw) == VmcoreinfoRfcSection.sizeof():
        return state(layout="rfc", addr_blob=raw)
    return state(layout="unknown")

def parse_addr_blob(blob: bytes, ev: Evidence, what: str = "address blob") -> int | None:
    """The 8-byte little-endian address, with QEMU's low-32-bit rule noted."""
    if len(blob) != ADDR_BLOB_SIZE:
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
                                f"({RFC_LAYOUT_NAMES[rfc_offset]})", page)
        return page
    other = [o for o in RFC_OFFSETS if o != rfc_offset and (addr - o) % PAGE_BLOB_SIZE == 0]
    hint = (f"; it is page + {other[0]}: the {RFC_LAYOUT_NAMES[other[0]]} layout, read it with "
            f"rfc_offset={other[0]}") if other else ""
    ev.fail("blob alignment", f"{addr:#x} is not a 4 KiB page + {rfc_offset} "
                              f"(offset in page {addr % PAGE_BLOB_SIZE:#x}){hint}", addr)
    return None


def check_suppressor(page_bytes: bytes, page: int, size: int, ev: Evidence) -> None:
    """Bytes ``0 .. size-1`` of the page must be zero; say which are not.  (Whether OVMF's probe
    would still take the page for a table is the firmware's side:
    :func:`vmci.firmware.acpi.check_ovmf_probe`.)"""
    head = page_bytes[:size]
    nonzero = [(i, b) for i, b in enumerate(head) if b]
    if not nonzero:
        ev.ok("suppressor", f"bytes 0-{size - 1} are zero (OVMF SDT header probe suppressor)", page)
    else:
        shown = ", ".join(f"+{i}={b:#04x}" for i, b in nonzero[:16])
        more = f" and {len(nonzero) - 16} more" if len(nonzero) > 16 else ""
        ev.warn("suppressor", f"{len(nonzero)} non-zero byte(s) in the suppressor: {shown}{more}", page)
