"""The seed's walk: the RFC device's saved address blob -> its page -> the guest's VMCOREINFO note.

``etc/vmcoreinfo-addr`` (8 bytes, little-endian, kept by QEMU and migrated) holds page + 40
(page + 36 in the later RFC revision).  The page starts with the OVMF SDT-header-probe
suppressor (zeros), then ``u32 version`` (0), ``u64 paddr`` and ``u32 size`` of the note.
QEMU's ``vmcoreinfo_get()`` trusts all of this; we check every field and say which check
failed.  :func:`walk_page` is shared with the ACPI walk.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmci.core.dump import Dump
from vmci.core.evidence import Evidence
from vmci.core.memory import PhysicalMemory
from vmci.discover.finding import Candidate, Finding
from vmci.discover.guest_note import conclude, read_guest_note, read_or_none
from vmci.discover.strategy import Inputs
from vmci.firmware.acpi import check_ovmf_probe
from vmci.layouts.fw_cfg import PAGE_BLOB_SIZE, RFC_OFFSET_V1, VmcoreinfoRfcContent
from vmci.layouts.note import NOTE_HEADER_SIZE
from vmci.machine.qemu_devices import (
    MAX_GUEST_NOTE_SIZE,
    RFC_OFFSETS,
    check_suppressor,
    page_of,
    parse_addr_blob,
)
from vmci.machine.qemu_devices import RFC_LAYOUT_NAMES as LAYOUT_NAMES

NAME = "address-blob"
_CONTENT = VmcoreinfoRfcContent


class AddressBlobStrategy:
    """The saved address blob, when the caller (or a migration stream's saved state) has it."""

    name = NAME
    rank = 30
    why = "the RFC device's saved address blob, walked as QEMU's vmcoreinfo_get() does"
    needs = "the saved address blob (--addr-blob)"
    device = True
    searches = False
    last_resort = False

    def applies(self, dump: Dump, inputs: Inputs) -> bool:
        return inputs.addr_blob is not None

    def run(self, dump: Dump, inputs: Inputs, earlier: Sequence[Finding] = ()) -> Finding:
        assert inputs.addr_blob is not None
        return walk_blob(dump.memory, inputs.addr_blob, rfc_offset=inputs.rfc_offset)


def check_page(mem: PhysicalMemory, page: int, rfc_offset: int, ev: Evidence) -> tuple[int, int] | None:
    """Check the RFC page at ``page``; return the note's ``(paddr, size)`` when the content is usable."""
    raw = read_or_none(mem, page, PAGE_BLOB_SIZE)
    if raw is None:
        ev.fail("page readable", f"the {PAGE_BLOB_SIZE}-byte page is not all in the dump", page)
        return None
    check_suppressor(raw, page, rfc_offset, ev)
    check_ovmf_probe(raw, page, ev)
    content = _CONTENT.parse(raw[rfc_offset:rfc_offset + _CONTENT.sizeof()])
    at = page + rfc_offset
    if content.version != 0:
        hint = _other_layout_hint(mem, raw, rfc_offset)
        ev.fail("version", f"unknown vmcoreinfo memory version {content.version} "
                           f"(u32 at +{rfc_offset}; only version 0 is defined){hint}", at)
        return None
    ev.ok("version", f"u32 version at +{rfc_offset} is 0", at)
    paddr, size = content.paddr, content.size
    ev.info("content", f"paddr {paddr:#x} (u64 at +{rfc_offset + 4}), size {size} "
                       f"(u32 at +{rfc_offset + 12})", at + 4)
    return paddr, size


def _other_layout_hint(mem: PhysicalMemory, raw: bytes, rfc_offset: int) -> str:
    for other in RFC_OFFSETS:
        if other == rfc_offset:
            continue
        c = _CONTENT.parse(raw[other:other + _CONTENT.sizeof()])
        if c.version == 0 and c.paddr and mem.contains(c.paddr, NOTE_HEADER_SIZE) and \
                NOTE_HEADER_SIZE <= c.size <= MAX_GUEST_NOTE_SIZE:
            return (f"; at +{other} the page reads as version 0, paddr {c.paddr:#x}, size {c.size}: "
                    f"the {LAYOUT_NAMES[other]} layout, read it with rfc_offset={other}")
    return ""


def walk_page(mem: PhysicalMemory, page: int, rfc_offset: int, cand: Candidate) -> None:
    """From a page base to the note: fills ``cand`` (text, paddr, note size, facts)."""
    ev = cand.evidence
    cand.facts.update({"page": page, "rfc_offset": rfc_offset, "layout": LAYOUT_NAMES[rfc_offset]})
    content = check_page(mem, page, rfc_offset, ev)
    if content is None:
        return
    paddr, size = content
    cand.paddr = paddr
    cand.facts.update({"record_paddr": paddr, "record_size": size})
    got = read_guest_note(mem, paddr, size, ev)
    if got is None:
        return
    cand.text, cand.note_size = got
    if not ev.failed:
        ev.ok("layout", f"matched the {LAYOUT_NAMES[rfc_offset]} layout", page + rfc_offset)


def walk_blob(mem: PhysicalMemory, addr_blob: bytes, *, rfc_offset: int = RFC_OFFSET_V1) -> Finding:
    """Follow a saved ``etc/vmcoreinfo-addr`` blob (8 bytes LE) to the guest's VMCOREINFO note."""
    if rfc_offset not in RFC_OFFSETS:
        raise ValueError(f"rfc_offset is 40 or 36, not {rfc_offset}")
    finding = Finding(NAME)
    finding.facts["present"] = True
    cand = Candidate(NAME, None, None, None)
    ev = cand.evidence
    addr = parse_addr_blob(bytes(addr_blob), ev)
    if addr is not None:
        finding.facts["blob"] = addr
        page = page_of(addr & 0xFFFFFFFF, rfc_offset, ev)
        if page is not None:
            walk_page(mem, page, rfc_offset, cand)
    conclude(finding, cand)
    return finding
