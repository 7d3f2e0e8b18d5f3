"""The seed's walk: the RFC device's saved address blob -> its page -> the guest's VMCOREINFO note.

``etc/vmcoreinfo-addr`` (8 bytes, little-endian, kept by QEMU and migrated) holds page + 40
(page + 36 in the later RFC revision).  The page starts with the OVMF SDT-header-probe
suppressor (zeros), then ``u32 version`` (0), ``u64 paddr`` and ``u32 size`` of the note.
QEMU's ``vmcoreinfo_get()`` trusts all of this; we check every field and say which check
failed.  :func:`check_page` and :func:`read_guest_note` are shared with the ACPI walk and
the fw_cfg-record strategy.
"""

from __future__ import annotations

from vmci.core.evidence import Evidence
from vmci.core.memory import PhysicalMemory
from vmci.discover.finding import Candidate, Finding
from vmci.errors import VmciError
from vmci.firmware.acpi import check_ovmf_probe
from vmci.kernel.vmcoreinfo import VMCOREINFO_NOTE_NAME, VMCOREINFO_NOTE_TYPE, VmcoreInfo
from vmci.layouts.fw_cfg import PAGE_BLOB_SIZE, RFC_OFFSET_V1, VmcoreinfoRfcContent
from vmci.layouts.note import NOTE_HEADER_SIZE, align4, note_header_struct
from vmci.machine.qemu_devices import RFC_LAYOUT_NAMES as LAYOUT_NAMES
from vmci.machine.qemu_devices import RFC_OFFSETS, check_suppressor, page_of, parse_addr_blob

#: QEMU's dump_init refuses guest notes larger than this (MAX_GUEST_NOTE_SIZE).
MAX_GUEST_NOTE_SIZE = 1 << 20
_CONTENT = VmcoreinfoRfcContent
_NAME = VMCOREINFO_NOTE_NAME + b"\0"


def _read(mem: PhysicalMemory, paddr: int, n: int) -> bytes | None:
    try:
        return mem.read(paddr, n)
    except VmciError:
        return None


def check_page(mem: PhysicalMemory, page: int, rfc_offset: int, ev: Evidence) -> tuple[int, int] | None:
    """Check the RFC page at ``page``; return the note's ``(paddr, size)`` when the content is usable."""
    raw = _read(mem, page, PAGE_BLOB_SIZE)
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


def read_guest_note(mem: PhysicalMemory, paddr: int, size: int, ev: Evidence, *,
                    byteorder: str = "little") -> tuple[VmcoreInfo, int] | None:
    """What QEMU's dump_init does with a registered note, checked: size bounds, RAM, the
    VMCOREINFO header, descsz within ``size``.  Returns ``(text, padded note size)``."""
    if size < NOTE_HEADER_SIZE:
        ev.fail("size bounds", f"size {size} is smaller than a note header ({NOTE_HEADER_SIZE}): "
                               "QEMU ignores the note", paddr)
        return None
    if size > MAX_GUEST_NOTE_SIZE:
        ev.fail("size bounds", f"size {size} exceeds QEMU's limit of {MAX_GUEST_NOTE_SIZE} (1 MiB): "
                               "QEMU ignores the note", paddr)
        return None
    ev.ok("size bounds", f"{NOTE_HEADER_SIZE} <= size {size} <= {MAX_GUEST_NOTE_SIZE}", paddr)
    if not mem.contains(paddr, NOTE_HEADER_SIZE):
        ev.fail("paddr in RAM", f"note address {paddr:#x} is outside the dump's RAM "
                                f"({_ranges(mem)})", paddr)
        return None
    if not mem.contains(paddr, size):
        ev.warn("paddr in RAM", f"the note starts in RAM but {paddr:#x}+{size} runs past it", paddr)
    else:
        ev.ok("paddr in RAM", f"{paddr:#x}..{paddr + size:#x} lies in the dump's RAM", paddr)
    head = _read(mem, paddr, NOTE_HEADER_SIZE)
    if head is None:
        ev.fail("note readable", "the note header is RAM the dump does not hold (excluded page)", paddr)
        return None
    namesz, descsz, ntype = note_header_struct(byteorder).unpack(head)
    name_raw = _read(mem, paddr + NOTE_HEADER_SIZE, min(namesz, 64)) if namesz else b""
    if namesz != len(_NAME) or name_raw != _NAME:
        ev.fail("note name", f"n_namesz {namesz}, name {name_raw!r}: want 11 and b'VMCOREINFO\\x00'", paddr)
        return None
    ev.ok("note name", "n_namesz 11, name VMCOREINFO\\0", paddr + NOTE_HEADER_SIZE)
    if ntype != VMCOREINFO_NOTE_TYPE:
        ev.fail("note type", f"n_type {ntype}: a VMCOREINFO note has type 0", paddr + 8)
        return None
    ev.ok("note type", "n_type 0", paddr + 8)
    note_size = NOTE_HEADER_SIZE + align4(namesz) + align4(descsz)
    desc_paddr = paddr + NOTE_HEADER_SIZE + align4(namesz)
    if note_size > size:
        ev.fail("note descsz", f"n_descsz {descsz} makes the note {note_size} bytes, more than the "
                               f"registered size {size}: truncated (QEMU drops it)", paddr + 4)
        return None
    desc = _read(mem, desc_paddr, descsz)
    if desc is None:
        ev.fail("note descsz", f"the {descsz}-byte descriptor at {desc_paddr:#x} runs past the dump's "
                               "RAM: truncated", paddr + 4)
        return None
    ev.ok("note descsz", f"n_descsz {descsz}: note of {note_size} bytes fits the size {size}", paddr + 4)
    text = VmcoreInfo.parse(desc)
    keyed = [ln for ln in text.lines if ln.key]
    if not keyed:
        ev.fail("text", "the descriptor holds no KEY=value lines", desc_paddr)
        return None
    codes = sorted({w.code for w in text.warnings})
    if codes:
        ev.warn("text", f"{len(keyed)} KEY=value lines, OSRELEASE={text.osrelease}; lint: "
                        + ", ".join(codes), desc_paddr)
    else:
        ev.ok("text", f"{len(keyed)} KEY=value lines, OSRELEASE={text.osrelease}", desc_paddr)
    return text, note_size


def _ranges(mem: PhysicalMemory) -> str:
    rs = list(mem.ranges)
    shown = ", ".join(str(r) for r in rs[:4])
    return shown + (f" and {len(rs) - 4} more" if len(rs) > 4 else "")


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
    finding = Finding("address-blob")
    finding.facts["present"] = True
    cand = Candidate("address-blob", None, None, None)
    ev = cand.evidence
    addr = parse_addr_blob(bytes(addr_blob), ev)
    if addr is not None:
        finding.facts["blob"] = addr
        page = page_of(addr & 0xFFFFFFFF, rfc_offset, ev)
        if page is not None:
            walk_page(mem, page, rfc_offset, cand)
    _conclude(finding, cand)
    return finding


def _conclude(finding: Finding, cand: Candidate) -> None:
    if cand.valid:
        finding.candidates.append(cand)
        finding.chosen = cand
        finding.evidence.ok("result", f"reached the VMCOREINFO note at {cand.paddr:#x}", cand.paddr)
    else:
        finding.rejected.append(cand)
        last = next((s for s in reversed(cand.evidence.steps) if s.verdict == "fail"), None)
        finding.evidence.fail("result", f"no usable note: {last.action}: {last.detail}" if last
                              else "no usable note")
