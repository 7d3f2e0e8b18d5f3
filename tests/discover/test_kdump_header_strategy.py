"""kdump sub-header offset_vmcoreinfo vs the notes blob, on dumps made by the kdump writer."""

from __future__ import annotations

from pathlib import Path

from vmci.core.dump import Dump
from vmci.core.memory import Range, SparseMemory
from vmci.discover.elf_note import find_note
from vmci.discover.kdump_header import find_kdump_header
from vmci.discover.run import find_vmcoreinfo
from vmci.formats import open_dump
from vmci.formats.kdump import write_kdump
from vmci.formats.notes import encode_notes, find_desc
from vmci.producer.linux import KernelLayout, vmcoreinfo_text

MiB = 1 << 20
TEXT = vmcoreinfo_text(KernelLayout(seed=1))
STALE = vmcoreinfo_text(KernelLayout(seed=2, osrelease="5.10.0-stale"))


def kdump(tmp_path: Path, notes: bytes, span: tuple[int, int] | None, **kw: object) -> Dump:
    mem = SparseMemory([Range(0, 8 * MiB)])
    mem.write(0x100000, b"\x90" * 4096)
    path = tmp_path / "dump.kdump"
    with path.open("wb") as f:
        write_kdump(f, mem, notes, vmcoreinfo_span=span, compression="none", **kw)  # type: ignore[arg-type]
    return open_dump(path)


def test_header_and_notes_agree(tmp_path: Path) -> None:
    blob = encode_notes([("CORE", 1, bytes(336)), ("VMCOREINFO", 0, TEXT)])
    with kdump(tmp_path, blob, find_desc(blob, "VMCOREINFO")) as d:
        f = find_kdump_header(d)
        assert f.found and f.chosen is not None and f.chosen.text is not None and f.chosen.text.raw == TEXT
        assert f.facts["agree"] is True and f.facts["offset_vmcoreinfo"] == f.facts["note_desc_offset"]
        assert any(s.action == "notes blob" and s.verdict == "ok" for s in f.evidence)
        n = find_note(d)
        assert n.found and n.chosen is not None and n.chosen.facts["where"] == "kdump notes"


def test_header_points_at_other_bytes_than_the_note(tmp_path: Path) -> None:
    blob = encode_notes([("VMCOREINFO", 0, TEXT), ("STALECOPY", 0, STALE)])
    with kdump(tmp_path, blob, find_desc(blob, "STALECOPY")) as d:
        f = find_kdump_header(d)
        assert f.facts["agree"] is False
        bad = [s for s in f.evidence if s.verdict == "fail"]
        assert len(bad) == 1 and bad[0].action == "notes blob" and "different bytes" in bad[0].detail
        assert f.chosen is not None and f.chosen.text is not None
        assert f.chosen.text.osrelease == "5.10.0-stale"
        disc = find_vmcoreinfo(d)
        assert disc.chosen is not None and disc.chosen.source == "elf-note"  # the note ranks first
        assert "DIFFERENT text from kdump-header" in disc.reason
        # the stale copy's odd name is reported by the note strategy, not used
        assert [s.action for c in find_note(d).rejected for s in c.evidence] == ["note name"]


def test_header_without_note_in_blob(tmp_path: Path) -> None:
    raw = TEXT
    blob = encode_notes([("CORE", 1, bytes(336)), ("RAWTEXT", 7, raw)])
    with kdump(tmp_path, blob, find_desc(blob, "RAWTEXT")) as d:
        f = find_kdump_header(d)
        assert f.found and f.facts["agree"] is None
        assert any(s.action == "notes blob" and s.verdict == "warn" and "libkdumpfile" in s.detail
                   for s in f.evidence)


def test_header_offset_at_garbage(tmp_path: Path) -> None:
    blob = encode_notes([("VMCOREINFO", 0, TEXT), ("JUNK", 0, b"\xff" * 200)])
    with kdump(tmp_path, blob, find_desc(blob, "JUNK")) as d:
        f = find_kdump_header(d)
        assert not f.found and f.facts["agree"] is False
        assert [s.action for s in f.rejected[0].evidence] == ["offset_vmcoreinfo"]


def test_no_size_vmcoreinfo(tmp_path: Path) -> None:
    blob = encode_notes([("VMCOREINFO", 0, TEXT)])
    with kdump(tmp_path, blob, None) as d:
        f = find_kdump_header(d)
        assert not f.found and "size_vmcoreinfo is 0" in f.rejected[0].evidence.steps[0].detail


def test_not_a_kdump(tmp_path: Path) -> None:
    from vmci.formats.elf import write_elf

    mem = SparseMemory([Range(0, MiB)])
    path = tmp_path / "d.elf"
    with path.open("wb") as out:
        write_elf(out, mem, encode_notes([("VMCOREINFO", 0, TEXT)]))
    with open_dump(path) as d:
        f = find_kdump_header(d)
        assert not f.found and not f.facts.get("present")
