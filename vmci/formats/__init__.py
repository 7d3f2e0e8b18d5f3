"""Dump containers: detection by content, readers and writers.

:func:`open_dump` is the entry point: it looks at the first bytes, never at the file name.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmci.core.dump import Dump
from vmci.errors import FormatError, UsageError
from vmci.formats.source import FileSource
from vmci.layouts.magic import ELF_MAGIC, LIBVIRT_MAGICS, QEVM_MAGIC, is_flattened, is_kdump

FORMATS = ("auto", "elf", "kdump", "flattened", "raw")


def open_dump(path: str | os.PathLike[str], *, format: str = "auto", raw_base: int = 0) -> Dump:
    """Open a dump read-only and return its memory, notes, CPUs and header facts.

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
    # readers are imported only for the format at hand: each costs tens of milliseconds
    head = src.read(0, min(src.size, 64))
    if format == "raw":
        from vmci.formats.raw import read_raw

        return read_raw(src, path, raw_base)
    if head[:4] == ELF_MAGIC and format in ("auto", "elf"):
        from vmci.formats.elf.reader import read_elf

        return read_elf(src, path)
    if is_kdump(head) and format in ("auto", "kdump"):
        from vmci.formats.kdump.reader import read_kdump

        return read_kdump(src, path)
    if is_flattened(head) and format in ("auto", "flattened", "kdump", "elf"):
        from vmci.formats.flattened import FlattenedSource

        src.close()
        flat = FlattenedSource(path)
        try:
            inner = flat.read(0, min(flat.size, 64))
            if is_kdump(inner):
                from vmci.formats.kdump.reader import read_kdump

                dump = read_kdump(flat, path, container="flattened")
            elif inner[:4] == ELF_MAGIC:
                from vmci.formats.elf.reader import read_elf

                dump = read_elf(flat, path, container="flattened")
            else:
                raise FormatError(
                    "flattened file holds neither a kdump nor an ELF dump", field="data", offset=0
                )
        except BaseException:
            flat.close()
            raise
        dump.warnings[:0] = flat.warnings
        dump.facts["flattened_records"] = flat.records
        return dump
    if head[:4] == QEVM_MAGIC:
        from vmci.formats.migration.reader import read_migration

        return read_migration(src, path)
    if head[:16] in LIBVIRT_MAGICS:
        from vmci.formats.libvirt import read_libvirt

        return read_libvirt(src, path)
    if format != "auto":
        raise FormatError(f"not a {format} dump", field="magic", offset=0)
    if not src.size:
        raise FormatError("the file is empty", field="magic", offset=0)
    raise FormatError(
        "unknown dump format (not ELF, kdump, flattened kdump, QEMU migration or libvirt save); "
        "use --format raw for a raw memory image",
        field="magic",
        offset=0,
    )
