"""The kdump sub-header's ``offset_vmcoreinfo``/``size_vmcoreinfo``, cross-checked with the notes blob.

Two places say where the text is, and readers disagree on which to trust: crash reads the
sub-header fields, libkdumpfile (header version >= 4) the VMCOREINFO note in the notes blob.
QEMU and makedumpfile make the first point into the second; when they differ, one of the two
readers sees another text (or none).
"""

from __future__ import annotations

from collections.abc import Sequence

from vmci.core.dump import Dump
from vmci.core.headers import KdumpHeader
from vmci.discover.finding import Candidate, Finding
from vmci.discover.guest_note import note_size
from vmci.discover.strategy import Inputs
from vmci.kernel.vmcoreinfo import VmcoreInfo

NAME = "kdump-header"
KDUMP_NOTES = "kdump notes"


class KdumpHeaderStrategy:
    """The kdump sub-header's pointer, on kdump dumps (on others only when named: it then says why
    there is nothing)."""

    name = NAME
    rank = 20
    why = "the kdump sub-header's offset_vmcoreinfo, what crash reads"
    needs = None
    device = False
    searches = False
    last_resort = False

    def applies(self, dump: Dump, inputs: Inputs) -> bool:
        return isinstance(dump.header, KdumpHeader)

    def run(self, dump: Dump, inputs: Inputs, earlier: Sequence[Finding] = ()) -> Finding:
        return find_kdump_header(dump)


def find_kdump_header(dump: Dump) -> Finding:
    """The text at ``offset_vmcoreinfo``, with the notes-blob comparison in the evidence."""
    finding = Finding(NAME)
    fev = finding.evidence
    header = dump.header
    if not isinstance(header, KdumpHeader):
        fev.info("format", f"{dump.format} dump: no kdump sub-header")
        return finding
    version = header.header_version
    if header.offset_vmcoreinfo is None or header.size_vmcoreinfo is None:
        fev.info("header version", f"header_version {version}: no offset_vmcoreinfo field (v3+)")
        return finding
    finding.facts["present"] = True
    off, size = header.offset_vmcoreinfo, header.size_vmcoreinfo
    text_raw = header.vmcoreinfo_text
    finding.facts.update({"offset_vmcoreinfo": off, "size_vmcoreinfo": size,
                          "offset_note": header.offset_note, "size_note": header.size_note})
    cand = Candidate(NAME, None, None, None)
    ev = cand.evidence
    cand.facts.update({"file_offset": off, "size": size})
    if not size:
        ev.fail("offset_vmcoreinfo", "size_vmcoreinfo is 0: crash finds no vmcoreinfo")
    elif text_raw is None:
        ev.fail("offset_vmcoreinfo", f"{off:#x} (+{size}) lies outside the file")
    else:
        text = VmcoreInfo.parse(text_raw)
        if not text_raw.startswith(b"OSRELEASE=") or not any(ln.key for ln in text.lines):
            ev.fail("offset_vmcoreinfo", f"{size} bytes at {off:#x} are not a VMCOREINFO text "
                                         f"(start {text_raw[:16]!r})")
        else:
            ev.ok("offset_vmcoreinfo", f"{size} bytes at file offset {off:#x}, OSRELEASE={text.osrelease}")
            cand.text = text
            cand.note_size = note_size(size)
    note = next((n for n in dump.notes if n.name == "VMCOREINFO" and n.where == KDUMP_NOTES), None)
    if note is None:
        agree = None
        fev.warn("notes blob", f"no VMCOREINFO note in the notes blob (offset_note "
                               f"{header.offset_note or 0:#x}, {header.size_note or 0} bytes): "
                               "libkdumpfile (header v4+) finds no vmcoreinfo")
    else:
        desc_off = note.desc_offset
        finding.facts["note_desc_offset"] = desc_off
        same_bytes = text_raw == note.desc
        agree = same_bytes
        if same_bytes and desc_off == off:
            fev.ok("notes blob", f"offset_vmcoreinfo {off:#x} is the VMCOREINFO note's descriptor in the "
                                 "notes blob: crash and libkdumpfile read the same bytes")
        elif same_bytes:
            fev.ok("notes blob", f"offset_vmcoreinfo {off:#x} is a separate copy of the note's text "
                                 f"(descriptor at {desc_off:#x}), byte-equal")
        else:
            fev.fail("notes blob", f"offset_vmcoreinfo {off:#x} (+{size}) and the notes blob's VMCOREINFO "
                                   f"descriptor at {desc_off:#x} (+{len(note.desc)}) hold different bytes: "
                                   "crash and libkdumpfile see different texts")
    finding.facts["agree"] = agree
    if cand.valid:
        finding.candidates.append(cand)
        finding.chosen = cand
    else:
        finding.rejected.append(cand)
    return finding
