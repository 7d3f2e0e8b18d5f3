"""Shared command-line parameters and their parsers: one definition each.

Integers and sizes (:func:`parse_int`, defined in :mod:`vmci.core.units`), blob arguments
(:func:`blob_arg`), and the typer option types the commands share (dump argument, ``--format``,
``--raw-base``, ``--json``, blobs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vmci.core.units import parse_int
from vmci.errors import UsageError

DumpArg = Annotated[Path, typer.Argument(help="The dump file (ELF, kdump, flattened kdump, raw).")]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="Force a reader: auto, elf, kdump, flattened, raw.")
]
BaseOpt = Annotated[str, typer.Option("--raw-base", help="Physical address of a raw image's first byte.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

BlobOpt = Annotated[
    str | None,
    typer.Option("--addr-blob", help="The RFC device's saved etc/vmcoreinfo-addr: a file of 8 bytes, "
                 "16 hex digits as stored (little-endian, e.g. 28e0ff0700000000), or 0x<address>."),
]
RecordOpt = Annotated[
    str | None,
    typer.Option("--fw-cfg-record", help="The upstream etc/vmcoreinfo record: a file of 16 bytes or "
                 "32 hex digits as stored."),
]

SymbolsOpt = Annotated[
    Path | None,
    typer.Option("--system-map", help="A System.map, vmlinux or vmlinuz (bzImage) of the dumped kernel: "
                 "exact symbol addresses and cross-checks."),
]


def blob_arg(value: str, what: str, size: int) -> bytes:
    """Bytes from a file, hex digits as stored (spaces and colons allowed), or ``0x<integer>``
    (encoded little-endian in ``size`` bytes)."""
    path = Path(value)
    if path.is_file():
        try:
            actual = path.stat().st_size
            if actual != size:  # checked before reading: the path may name anything
                raise UsageError(f"{what}: {value} holds {actual} bytes, not {size}")
            return path.read_bytes()
        except OSError as e:
            raise UsageError(f"{what}: cannot read {value}: {e.strerror}") from None
    text = value.strip().lower()
    if text.startswith("0x"):
        n = parse_int(text, what)
        if n >> (8 * size):
            raise UsageError(f"{what}: {value} does not fit {size} bytes")
        return n.to_bytes(size, "little")
    digits = text.replace(" ", "").replace(":", "")
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise UsageError(f"{what} is neither a file nor hex digits: {value!r}") from None
    if len(data) != size:
        raise UsageError(f"{what}: {len(data)} bytes given, the blob is {size}")
    return data


def optional_blob(value: str | None, what: str, size: int) -> bytes | None:
    """:func:`blob_arg` for an option that may be absent."""
    return None if value is None else blob_arg(value, what, size)


def open_dump_arg(dump: Path, format: str, raw_base: str) -> Any:
    """Open the dump a command was given, with its ``--format`` and ``--raw-base``."""
    from vmci.formats import open_dump

    return open_dump(dump, format=format, raw_base=parse_int(raw_base, "--raw-base"))
