"""The dump's own VMCOREINFO ELF note: any PT_NOTE (or the kdump notes blob), any position.

QEMU appends the guest's note after the per-CPU notes; kexec/makedumpfile put it elsewhere.
The readers hand us decoded notes; here each is checked as a VMCOREINFO note (name
``VMCOREINFO`` with its NUL, i.e. n_namesz 11; type 0; a text of ``KEY=value`` lines), and
notes that carry such a text under another name or type are reported, not used.
"""

from __future__ import annotations

from vmci.core.dump import Dump, Note
from vmci.discover.finding import Candidate, Finding
from vmci.kernel.vmcoreinfo import VMCOREINFO_NOTE_TYPE, VmcoreInfo

NAME = "VMCOREINFO"


def _looks_like_text(desc: bytes) -> bool:
    return desc.startswith(b"OSRELEASE=")


def _where(n: Note) -> str:
    off = "" if n.offset is None else f" at file offset {n.offset:#x}"
    return f"{n.where or 'note'}{off}"


def find_note(dump: Dump) -> Finding:
    """Every VMCOREINFO note among ``dump.notes``; the first valid one is chosen."""
    finding = Finding("elf-note")
    fev = finding.evidence
    fev.info("notes", f"{len(dump.notes)} note(s) in the dump: "
                      + (", ".join(f"{n.name or '-'}/{n.type}" for n in dump.notes[:12]) or "none"))
    for index, n in enumerate(dump.notes):
        named = n.name == NAME
        if not named and not _looks_like_text(n.desc):
            continue
        cand = Candidate("elf-note", None, None, None)
        cand.facts.update({"note_index": index, "file_offset": n.offset, "where": n.where,
                           "desc_offset": n.desc_offset})
        ev = cand.evidence
        if not named:
            ev.fail("note name", f"{_where(n)}: a VMCOREINFO-like text under the name {n.name!r} "
                                 "(readers look for VMCOREINFO)")
            finding.rejected.append(cand)
            continue
        ev.ok("note name", f"{_where(n)}: name VMCOREINFO (n_namesz 11)")
        if n.type != VMCOREINFO_NOTE_TYPE:
            ev.fail("note type", f"n_type {n.type}: a VMCOREINFO note has type 0")
            finding.rejected.append(cand)
            continue
        ev.ok("note type", "n_type 0")
        text = VmcoreInfo.parse(n.desc)
        keyed = [ln for ln in text.lines if ln.key]
        if not keyed:
            ev.fail("text", f"{len(n.desc)}-byte descriptor without KEY=value lines")
            finding.rejected.append(cand)
            continue
        codes = sorted({w.code for w in text.warnings})
        detail = f"{len(n.desc)} bytes, {len(keyed)} KEY=value lines, OSRELEASE={text.osrelease}"
        if codes:
            ev.warn("text", detail + "; lint: " + ", ".join(codes))
        else:
            ev.ok("text", detail)
        cand.text = text
        cand.note_size = 12 + 12 + ((len(n.desc) + 3) & ~3)
        finding.candidates.append(cand)
    if not finding.candidates:
        fev.fail("result", "no VMCOREINFO note in the dump" if not finding.rejected
                 else "only unusable VMCOREINFO-like notes")
        return finding
    finding.chosen = finding.candidates[0]
    where = _where(dump.notes[finding.chosen.facts["note_index"]])
    if len(finding.candidates) > 1:
        same = len({c.text.raw for c in finding.candidates if c.text}) == 1
        fev.warn("result", f"{len(finding.candidates)} VMCOREINFO notes "
                           f"({'identical' if same else 'DIFFERENT texts'}); using the first, {where}")
    else:
        fev.ok("result", f"one VMCOREINFO note, {where}")
    return finding
