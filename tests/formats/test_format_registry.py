"""The format registry: each probe accepts what its writer makes and nothing else; forcing a
format; readers imported only when chosen."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sample_memory, sample_notes

from vmci.core.headers import ElfHeader, KdumpHeader, RawHeader
from vmci.core.memory import Range, SparseMemory
from vmci.core.saved_state import SavedState
from vmci.errors import FormatError, UsageError
from vmci.formats import FORMATS, PROBE_BYTES, REGISTRY, detect, open_dump
from vmci.formats.elf import write_elf
from vmci.formats.kdump import write_kdump
from vmci.formats.libvirt import write_libvirt
from vmci.formats.migration.writer import write_migration
from vmci.formats.raw import write_raw

MEM = sample_memory(seed=9, size=0x400000)


def samples() -> dict[str, bytes]:
    """One file per format, each from its own writer."""
    out: dict[str, bytes] = {}
    for name, write in {
        "elf": lambda f: write_elf(f, MEM, sample_notes()),
        "kdump": lambda f: write_kdump(f, MEM, sample_notes()),
        "flattened": lambda f: write_kdump(f, MEM, sample_notes(), flattened=True),
        "raw": lambda f: write_raw(f, MEM),
    }.items():
        buf = io.BytesIO()
        write(buf)
        out[name] = buf.getvalue()
    guest = SparseMemory([Range(0, 1 << 20)])
    guest.write(0x1000, b"guest page")
    stream = io.BytesIO()
    write_migration(stream, guest)
    out["migration"] = stream.getvalue()
    saved = io.BytesIO()
    stream.seek(0)
    write_libvirt(saved, stream, xml="<domain/>")
    out["libvirt"] = saved.getvalue()
    return out


SAMPLES = samples()


def test_every_format_has_a_sample_and_a_name() -> None:
    assert sorted(SAMPLES) == sorted(f.name for f in REGISTRY)
    assert list(FORMATS) == ["auto", *(f.name for f in REGISTRY)]


@pytest.mark.parametrize("fmt", REGISTRY, ids=lambda f: f.name)
def test_each_probe_accepts_its_writer_and_rejects_the_others(fmt) -> None:  # type: ignore[no-untyped-def]
    if fmt.probe is None:  # raw: never guessed, only forced
        assert detect(SAMPLES[fmt.name][:PROBE_BYTES], len(SAMPLES[fmt.name])) is None
        return
    for name, data in SAMPLES.items():
        assert fmt.probe(data[:PROBE_BYTES], len(data)) == (name == fmt.name), name
    assert fmt.probe(b"", 0) is False


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_open_by_content_and_forced(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(SAMPLES[name])
    header = {"elf": ElfHeader, "kdump": KdumpHeader, "flattened": KdumpHeader, "raw": RawHeader,
              "migration": SavedState, "libvirt": SavedState}[name]
    with open_dump(path, format=name) as d:
        assert isinstance(d.header, header)
    if name != "raw":
        with open_dump(path) as d:
            assert isinstance(d.header, header)
    other = "migration" if name != "migration" else "elf"
    with pytest.raises(FormatError, match=f"^not a {other} dump"):
        open_dump(path, format=other)


def test_flattened_serves_kdump_and_elf(tmp_path: Path) -> None:
    path = tmp_path / "flat"
    path.write_bytes(SAMPLES["flattened"])
    for forced in ("kdump", "elf", "flattened"):
        with open_dump(path, format=forced) as d:
            assert d.format == "kdump-flattened"


def test_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown format 'bogus'; choose from auto, elf, kdump, flattened"):
        open_dump(tmp_path, format="bogus")
    with pytest.raises(UsageError, match="is a directory"):
        open_dump(tmp_path)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="the file is empty"):
        open_dump(empty)


def test_only_the_chosen_reader_is_imported(tmp_path: Path) -> None:
    elf = tmp_path / "d.elf"
    elf.write_bytes(SAMPLES["elf"])
    code = (
        "import sys; from vmci.formats import open_dump; "
        "before = sorted(m for m in sys.modules if m.startswith('vmci.formats.')); "
        "open_dump(sys.argv[1]).close(); "
        "after = sorted(m for m in sys.modules if m.startswith('vmci.formats.')); print(before); print(after)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(elf)], capture_output=True, text=True, check=True)
    before, after = out.stdout.splitlines()
    assert before == "['vmci.formats.source']"
    assert "vmci.formats.elf.reader" in after
    assert not any(m in after for m in ("kdump", "migration", "libvirt", "flattened", "raw'"))
