"""Split sets: which files are refused, and that a refused set leaves no file open."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FULL_UTSNAME, sample_memory, sample_notes

from vmci.core.headers import KdumpHeader
from vmci.errors import FormatError, UsageError
from vmci.formats.elf import write_elf
from vmci.formats.flattened import FlatWriter
from vmci.formats.kdump import open_kdump_set, write_kdump
from vmci.formats.kdump.splitset import open_kdump_part

MEM = sample_memory(seed=3, size=0x400000)
MAX_PFN = MEM.ranges[-1].end // 4096


def part(tmp_path: Path, name: str, span: tuple[int, int], **kw: object) -> Path:
    path = tmp_path / name
    with path.open("wb") as f:
        write_kdump(f, MEM, sample_notes(), split=span, utsname=FULL_UTSNAME, **kw)  # type: ignore[arg-type]
    return path


def test_flattened_parts_and_the_set_header(tmp_path: Path) -> None:
    cut = MAX_PFN // 2
    parts = [part(tmp_path, "b", (cut, MAX_PFN), flattened=True), part(tmp_path, "a", (0, cut))]
    with open_kdump_set(parts) as d:
        assert isinstance(d.header, KdumpHeader) and d.header.split_files == tuple(str(p) for p in parts)
        assert d.header.flattened is not None  # the first file given is the flattened one
        for r in MEM.ranges:
            assert d.memory.read(r.start, r.size) == MEM.read(r.start, r.size)


def open_files(paths: list[Path]) -> list[str]:
    """The files of ``paths`` this process holds open (Linux /proc)."""
    names = {str(p.resolve()) for p in paths}
    fds = Path("/proc/self/fd")
    return [t for t in (str(f.readlink()) for f in fds.iterdir() if f.is_symlink()) if t in names]


def test_gap_is_refused_and_files_are_closed(tmp_path: Path) -> None:
    parts = [part(tmp_path, "a", (0, 10)), part(tmp_path, "b", (20, MAX_PFN))]
    with pytest.raises(FormatError, match="gap or overlap at PFN 0xa"):
        open_kdump_set(parts)
    assert open_files(parts) == []
    with open_kdump_set([part(tmp_path, "c", (0, 10)), part(tmp_path, "d", (10, MAX_PFN))]):
        assert len(open_files([tmp_path / "c", tmp_path / "d"])) >= 2  # the check sees open files


def test_what_is_not_a_kdump_part(tmp_path: Path) -> None:
    elf = tmp_path / "d.elf"
    with elf.open("wb") as f:
        write_elf(f, MEM, sample_notes())
    with pytest.raises(FormatError, match="not a kdump dump"):
        open_kdump_part(elf)
    flat_elf = tmp_path / "d.flat-elf"
    with flat_elf.open("wb") as f:
        w = FlatWriter(f)
        w.write_at(0, elf.read_bytes())
        w.close()
    with pytest.raises(FormatError, match="every file of a split set must be a kdump"):
        open_kdump_set([flat_elf])
    with pytest.raises(FormatError, match="an empty split set"):
        open_kdump_set([])
    with pytest.raises(UsageError, match="is a directory"):
        open_kdump_set([tmp_path])
