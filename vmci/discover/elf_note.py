"""The dump's own VMCOREINFO ELF note: any PT_NOTE (or the kdump notes blob), any position.

QEMU appends the guest's note after the per-CPU notes; kexec/makedumpfile put it elsewhere.
The readers hand us decoded notes; here each is checked as a VMCOREINFO note (name
``VMCOREINFO`` with its NUL, i.e. n_namesz 11; type 0; a text of ``KEY=value`` lines), and
notes that carry such a text under another name or type are reported, not used.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmci.core.dump import Dump, Note
from vmci.discover.finding import Candidate, Finding
from vmci.discover.guest_note import RESULT, check_text, note_size
from vmci.discover.strategy import Inputs
from vmci.kernel.vmcoreinfo import VMCOREINFO_NOTE_NAME, VMCOREINFO_NOTE_TYPE

NAME = "elf-note"
_NOTE_NAME = VMCOREINFO_NOTE_NAME.decode()


class ElfNoteStrategy:
    """The dump's own VMCOREINFO note (ELF PT_NOTE or the kdump notes blob)."""

    name = NAME
    rank = 10
    why = "the dump's own note: what QEMU (or kexec) copied from the guest at dump time"
    needs = None
    device = False
    searches = False
    last_resort = False

    def applies(self, dump: Dump, inputs: Inputs) -> bool:
        return True

    def run(self, dump: Dump, inputs: Inputs, earlier: Sequence[Finding] = ()) -> Finding:
        return find_note(dump)


def _looks_like_text(desc: bytes) -> bool:
    return desc.startswith(b"OSRELEASE=")


def _where(n: Note) -> str:
    off = "" if n.offset is None else f" at file offset {n.offset:#x}"
    return f"{n.where or 'note'}{off}"


def find_note(dump: Dump) -> Finding:
    """Every VMCOREINFO note among ``dump.notes``; the first valid one is chosen."""
    finding = Finding(NAME)
    fev = finding.evidence
    fev.info("notes", f"{len(dump.notes)} note(s) in the dump: "
                      + (", ".join(f"{n.name or '-'}/{n.type}" for n in dump.notes[:12]) or "none"))
    for index, n in enumerate(dump.notes):
        named = n.name == _NOTE_NAME
        if not named and not _looks_like_text(n.desc):
            continue
        cand = Candidate(NAME, None, None, None)
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
        text = check_text(n.desc, ev, prefix=f"{len(n.desc)} bytes, ",
                          empty=f"{len(n.desc)}-byte descriptor without KEY=value lines")
        if text is None:
            finding.rejected.append(cand)
            continue
        cand.text = text
        cand.note_size = note_size(len(n.desc))
        finding.candidates.append(cand)
    if not finding.candidates:
        fev.fail("result", "no VMCOREINFO note in the dump" if not finding.rejected
                 else "only unusable VMCOREINFO-like notes", code=RESULT)
        return finding
    finding.chosen = finding.candidates[0]
    where = _where(dump.notes[finding.chosen.facts["note_index"]])
    if len(finding.candidates) > 1:
        same = len({c.text.raw for c in finding.candidates if c.text}) == 1
        fev.warn("result", f"{len(finding.candidates)} VMCOREINFO notes "
                           f"({'identical' if same else 'DIFFERENT texts'}); using the first, {where}",
                 code=RESULT)
    else:
        fev.ok("result", f"one VMCOREINFO note, {where}", code=RESULT)
    return finding
