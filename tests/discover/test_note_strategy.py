"""The dump's own VMCOREINFO note, in any PT_NOTE and any position."""

from __future__ import annotations

from pathlib import Path

from vmci.core.memory import Range, SparseMemory
from vmci.discover.elf_note import find_note
from vmci.formats import open_dump
from vmci.formats.elf import write_elf
from vmci.formats.notes import encode_notes
from vmci.producer.linux import KernelLayout, vmcoreinfo_text

TEXT = vmcoreinfo_text(KernelLayout(seed=3))


def elf(tmp_path: Path, notes: list[tuple[str, int, bytes]]) -> Path:
    path = tmp_path / "d.elf"
    with path.open("wb") as out:
        write_elf(out, SparseMemory([Range(0, 1 << 20)]), encode_notes(notes))
    return path


def test_note_after_cpu_notes_like_qemu(tmp_path: Path) -> None:
    notes = [("CORE", 1, bytes(336)), ("QEMU", 0, bytes(440)), ("VMCOREINFO", 0, TEXT)]
    with open_dump(elf(tmp_path, notes)) as d:
        f = find_note(d)
        assert f.found and f.chosen is not None and f.chosen.text is not None and f.chosen.text.raw == TEXT
        assert f.chosen.facts["note_index"] == 2 and f.chosen.facts["where"] == "PT_NOTE #0"
        assert f.chosen.note_size == 24 + ((len(TEXT) + 3) & ~3)


def test_wrong_type_and_wrong_name_are_rejected(tmp_path: Path) -> None:
    notes = [("VMCOREINFO", 1, TEXT), ("VMCOREINFX", 0, TEXT)]
    with open_dump(elf(tmp_path, notes)) as d:
        f = find_note(d)
        assert not f.found
        assert [s.action for c in f.rejected for s in c.evidence if s.verdict == "fail"] == \
            ["note type", "note name"]


def test_two_notes_first_wins_with_a_warning(tmp_path: Path) -> None:
    other = vmcoreinfo_text(KernelLayout(seed=4, osrelease="6.1.0-other"))
    with open_dump(elf(tmp_path, [("VMCOREINFO", 0, TEXT), ("VMCOREINFO", 0, other)])) as d:
        f = find_note(d)
        assert f.chosen is not None and f.chosen.text is not None and f.chosen.text.raw == TEXT
        assert "DIFFERENT texts" in f.evidence.steps[-1].detail and f.evidence.steps[-1].verdict == "warn"


def test_no_note(tmp_path: Path) -> None:
    with open_dump(elf(tmp_path, [("CORE", 1, bytes(336))])) as d:
        f = find_note(d)
        assert not f.found and f.evidence.failed


def test_text_without_lines_is_rejected(tmp_path: Path) -> None:
    with open_dump(elf(tmp_path, [("VMCOREINFO", 0, b"\0\0\0\0")])) as d:
        assert [s.action for s in find_note(d).rejected[0].evidence][-1] == "text"
