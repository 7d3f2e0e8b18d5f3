"""``convert()``: any dump vmci reads, to a kdump or ELF file every other tool opens.

One call does it all: open the source (any format, a migration stream, a libvirt save, a split
set), choose the VMCOREINFO (or synthesize one), repair what the source container got wrong,
read ``struct page`` once to decide the pages the dump level leaves out, and stream the pages
into the target, each read once.  Output goes to a temporary name next to the target and is
renamed only when complete, so an interrupted conversion leaves nothing that looks finished;
the source is opened read-only.

Example::

    from vmci.convert import convert
    result = convert("guest.elf", "guest.kdump", to="kdump", compress="zlib", level=31)
    print(result.repairs, result.excluded)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from vmci.convert.filters import Exclusion, check_level, struct_page_exclusion
from vmci.convert.source import Prepared, prepare
from vmci.core.dump import Dump
from vmci.core.headers import CONVERSION_NOTE_NAME, ConversionRecord, ElfHeader
from vmci.errors import UsageError
from vmci.formats.notes import encode_notes
from vmci.kernel.vmcoreinfo import VMCOREINFO_NOTE_NAME

#: ``--to`` values.
TARGETS = ("kdump", "kdump-flat", "elf", "kexec-elf")
#: ``--compress`` values (page codecs of a kdump file).
COMPRESSIONS = ("zlib", "lzo", "snappy", "zstd", "none")

#: ``progress(phase, done, total)``; phases ``vmcoreinfo`` (a memory scan), ``struct page``, ``pages``.
Progress = Callable[[str, int, int], None]
DumpSource = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Dump


@dataclass
class ConvertResult:
    """What a conversion wrote and repaired."""

    outputs: list[Path]
    target: str
    compression: str
    level: int
    arch: str
    vmcoreinfo_source: str
    phys_base: int | None
    repairs: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    """Pages left out by class (``cache``, ``user``, ``free``, ``hwpoison``, ``offline``)."""
    pages_written: int = 0
    zero_pages: int = 0
    bytes_written: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"outputs": [str(p) for p in self.outputs], "target": self.target,
                "compression": self.compression, "level": self.level, "arch": self.arch,
                "vmcoreinfo_source": self.vmcoreinfo_source, "phys_base": self.phys_base,
                "repairs": list(self.repairs), "excluded": dict(self.excluded),
                "pages_written": self.pages_written, "zero_pages": self.zero_pages,
                "bytes_written": self.bytes_written, "warnings": list(self.warnings)}


def output_paths(out: str | os.PathLike[str], split: int | None) -> list[Path]:
    """The files a conversion writes: ``out``, or ``out.1`` .. ``out.N`` for a split set."""
    base = Path(out)
    if not split or split == 1:
        return [base]
    return [base.with_name(f"{base.name}.{i}") for i in range(1, split + 1)]


def convert(dump: DumpSource, out: str | os.PathLike[str], *, to: str = "kdump", compress: str = "zlib",
            level: int = 1, split: int | None = None, vmcoreinfo: bytes | None = None,
            progress: Progress | None = None) -> ConvertResult:
    """Convert ``dump`` into ``out`` (see the module docstring).

    ``dump``: a path, several paths (the files of a ``makedumpfile --split`` set) or an open
    :class:`~vmci.core.dump.Dump`.  ``to``: one of :data:`TARGETS`.  ``compress``: the page codec
    of a kdump target.  ``level``: makedumpfile's dump level, 0-31
    (:mod:`vmci.convert.filters`).  ``split``: write a kdump split set of that many files
    (:func:`output_paths`).  ``vmcoreinfo``: a text to use instead of the one vmci would choose.
    Raises :class:`~vmci.errors.UsageError` for bad arguments and
    :class:`~vmci.errors.NotFoundError` when the level needs ``struct page`` and the kernel's
    ``mem_map`` cannot be read.
    """
    if to not in TARGETS:
        raise UsageError(f"unknown target {to!r}; choose from {', '.join(TARGETS)}")
    if compress not in COMPRESSIONS:
        raise UsageError(f"unknown compression {compress!r}; choose from {', '.join(COMPRESSIONS)}")
    check_level(level)
    if split is not None and split < 1:
        raise UsageError(f"--split needs at least 1 file, not {split}")
    if split and split > 1 and not to.startswith("kdump"):
        raise UsageError("--split writes kdump files only (makedumpfile --split)")
    paths = output_paths(out, split)
    owned, d = _open(dump)
    try:
        _check_outputs(d, paths)
        return _convert(d, paths, to=to, compress=compress, level=level, vmcoreinfo=vmcoreinfo,
                        progress=progress)
    finally:
        if owned:
            d.close()


def _open(dump: DumpSource) -> tuple[bool, Dump]:
    if isinstance(dump, Dump):
        return False, dump
    if isinstance(dump, str | os.PathLike):
        from vmci.formats import open_dump

        return True, open_dump(dump)
    paths = [Path(p) for p in dump]
    if len(paths) == 1:
        from vmci.formats import open_dump

        return True, open_dump(paths[0])
    from vmci.formats.kdump.splitset import open_kdump_set

    return True, open_kdump_set(paths)


def _check_outputs(d: Dump, paths: list[Path]) -> None:
    split_files = getattr(d.header, "split_files", None)
    sources = [Path(p) for p in split_files] if split_files else [d.path]
    for p in paths:
        if p.is_dir():
            raise UsageError(f"{p} is a directory")
        for src in sources:
            with contextlib.suppress(OSError):
                if p.exists() and src.exists() and p.samefile(src):
                    raise UsageError(f"{p} is the dump being converted: the source is never written")


def _convert(d: Dump, paths: list[Path], *, to: str, compress: str, level: int, vmcoreinfo: bytes | None,
             progress: Progress | None) -> ConvertResult:
    from vmci import __version__

    def phase(name: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(name, done, total)

    prep = prepare(d, vmcoreinfo=vmcoreinfo, progress=phase("vmcoreinfo"))
    if to in ("elf", "kexec-elf") and isinstance(d.header, ElfHeader):
        prep.repairs += [f"ELF: {q}; written as the System V ABI has it" for q in d.header.quirks]
    memory = prep.pages  # in the kernel's pages (QEMU's arm64 kdump counts 64 KiB blocks)
    ps = memory.page_size
    nbits = max((-(-r.end // ps) for r in memory.ranges), default=0)
    exclusion = struct_page_exclusion(prep.kmem, memory, level, nbits=nbits, progress=phase("struct page"))
    record = ConversionRecord(
        tool=f"vmci {__version__}", source_format=d.format, source=d.path.name, target=to, dump_level=level,
        vmcoreinfo_source=prep.vmcoreinfo_source, arch=prep.arch.name, phys_base=prep.phys_base,
        repairs=tuple(prep.repairs), excluded=tuple(sorted(exclusion.counts.items())),
    )
    notes_blob = _notes(prep, record, kexec=to == "kexec-elf")
    result = ConvertResult(paths, to, compress if to.startswith("kdump") else "none", level, prep.arch.name,
                           prep.vmcoreinfo_source, prep.phys_base, list(prep.repairs), dict(exclusion.counts),
                           warnings=prep.warnings + exclusion.warnings)
    temps = [p.with_name(f".{p.name}.vmci-partial-{os.getpid()}") for p in paths]
    files: list[BinaryIO] = []
    try:
        for t in temps:
            files.append(t.open("wb"))
        written = _write(prep, files, notes_blob, to=to, compress=compress, level=level, exclusion=exclusion,
                         progress=phase("pages"))
        for f in files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for t, p in zip(temps, paths, strict=True):
            os.replace(t, p)
    except BaseException:
        for f in files:
            f.close()
        for t in temps:
            t.unlink(missing_ok=True)
        raise
    for facts in written:
        result.pages_written += facts.get("dumpable_pages", 0)
        result.zero_pages += facts.get("zero_pages", 0)
    result.bytes_written = sum(p.stat().st_size for p in paths)
    return result


def _notes(prep: Prepared, record: ConversionRecord, *, kexec: bool) -> bytes:
    """CPU notes (kexec: ``CORE`` only, as ``/proc/vmcore``), the source's other notes, the
    VMCOREINFO, the conversion record."""
    cpu = [n for n in prep.cpu_notes if not kexec or n[0] == "CORE"]
    notes = [*cpu, *prep.other_notes]
    if prep.vmcoreinfo is not None:
        notes.append((VMCOREINFO_NOTE_NAME.decode(), 0, prep.vmcoreinfo.raw))
    notes.append((CONVERSION_NOTE_NAME, 0, record.to_text()))
    return encode_notes(notes, prep.byteorder)


def _write(prep: Prepared, files: list[BinaryIO], notes_blob: bytes, *, to: str, compress: str, level: int,
           exclusion: Exclusion, progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    if to.startswith("kdump"):
        from vmci.convert.to_kdump import write_kdump_files

        return write_kdump_files(prep, files, notes_blob, flattened=to == "kdump-flat", compression=compress,
                                 level=level, exclusion=exclusion, progress=progress)
    from vmci.convert.to_elf import write_elf_file

    return [write_elf_file(prep, files[0], notes_blob, kexec=to == "kexec-elf", exclusion=exclusion,
                           progress=progress)]


__all__ = ["COMPRESSIONS", "TARGETS", "ConvertResult", "convert", "output_paths"]
