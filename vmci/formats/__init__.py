"""Dump containers: detection by content, readers and writers.

:func:`open_dump` is the entry point: it looks at the first bytes, never at the file name.
Each container is a :class:`Format` in :data:`REGISTRY`: a probe of the file's first bytes and a
loader that imports its reader only when chosen (each reader costs tens of milliseconds).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmci.core.dump import Dump
from vmci.errors import FormatError, UsageError
from vmci.formats.source import FileSource
from vmci.layouts.magic import ELF_MAGIC, LIBVIRT_MAGICS, QEVM_MAGIC, is_flattened, is_kdump

#: How many leading bytes a probe sees.
PROBE_BYTES = 64


@dataclass(frozen=True)
class Format:
    """One container: ``probe(head, size)`` says whether the file's first bytes are this format
    (None: never guessed, only forced); ``load(src, path, raw_base)`` reads it."""

    name: str
    """The ``--format`` value that forces this reader."""
    probe: Callable[[bytes, int], bool] | None
    load: Callable[[FileSource, Path, int], Dump]
    serves: tuple[str, ...] = ()
    """Other ``--format`` values this reader answers (a flattened file holds a kdump or ELF dump)."""

    def accepts(self, format: str) -> bool:
        return format in ("auto", self.name, *self.serves)


def _load_elf(src: FileSource, path: Path, raw_base: int) -> Dump:
    from vmci.formats.elf.reader import read_elf

    return read_elf(src, path)


def _load_kdump(src: FileSource, path: Path, raw_base: int) -> Dump:
    from vmci.formats.kdump.reader import read_kdump

    return read_kdump(src, path)


def _load_flattened(src: FileSource, path: Path, raw_base: int) -> Dump:
    from vmci.formats.flattened import read_flattened

    src.close()  # the flattened reader maps the file itself
    return read_flattened(path)


def _load_migration(src: FileSource, path: Path, raw_base: int) -> Dump:
    from vmci.formats.migration.reader import read_migration

    return read_migration(src, path)


def _load_libvirt(src: FileSource, path: Path, raw_base: int) -> Dump:
    from vmci.formats.libvirt import read_libvirt

    return read_libvirt(src, path)


def _load_raw(src: FileSource, path: Path, raw_base: int) -> Dump:
    from vmci.formats.raw import read_raw

    return read_raw(src, path, raw_base)


#: Every container, in detection order.
REGISTRY: tuple[Format, ...] = (
    Format("elf", lambda head, size: head[:4] == ELF_MAGIC, _load_elf),
    Format("kdump", lambda head, size: is_kdump(head), _load_kdump),
    Format("flattened", lambda head, size: is_flattened(head), _load_flattened, serves=("kdump", "elf")),
    Format("migration", lambda head, size: head[:4] == QEVM_MAGIC, _load_migration),
    Format("libvirt", lambda head, size: head[:16] in LIBVIRT_MAGICS, _load_libvirt),
    Format("raw", None, _load_raw),
)
FORMATS = ("auto", *(f.name for f in REGISTRY))


def detect(head: bytes, size: int, format: str = "auto") -> Format | None:
    """The format a file starting with ``head`` (of ``size`` bytes) is read as, or None."""
    for fmt in REGISTRY:
        if fmt.probe is None:
            if format == fmt.name:
                return fmt
        elif fmt.accepts(format) and fmt.probe(head, size):
            return fmt
    return None


def open_dump(path: str | os.PathLike[str], *, format: str = "auto", raw_base: int = 0) -> Dump:
    """Open a dump read-only and return its memory, notes, CPUs and typed header.

    ``format`` forces a reader (``raw`` is never guessed: a file that matches nothing else is
    an error unless you ask for ``raw``); ``raw_base`` is the physical address of a raw
    image's first byte.
    """
    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a dump")
    src = FileSource(path)
    try:
        return _dispatch(src, path, format, raw_base)
    except BaseException:
        src.close()
        raise


def _dispatch(src: FileSource, path: Path, format: str, raw_base: int) -> Dump:
    head = src.read(0, min(src.size, PROBE_BYTES))
    fmt = detect(head, src.size, format)
    actual = detect(head, src.size) if format != "auto" else fmt
    if fmt is not None and fmt.name == "raw" and actual is not None:
        # a forced format is checked against what the file's first bytes say
        raise FormatError(f"--format raw, but the file is a {actual.name} dump (its magic at offset 0); "
                          f"read it without --format or with --format {actual.name}", field="magic", offset=0)
    if fmt is not None:
        return fmt.load(src, path, raw_base)
    if format != "auto":
        said = f": its first bytes are a {actual.name} dump's" if actual is not None else ""
        raise FormatError(f"not a {format} dump{said}", field="magic", offset=0)
    if not src.size:
        raise FormatError("the file is empty", field="magic", offset=0)
    raise FormatError(
        "unknown dump format (not ELF, kdump, flattened kdump, QEMU migration or libvirt save); "
        "use --format raw for a raw memory image",
        field="magic",
        offset=0,
    )
