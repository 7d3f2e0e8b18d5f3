"""The ELF note header (``Elf32_Nhdr`` == ``Elf64_Nhdr``): three 32-bit words, 12 bytes.

The same declaration serves ELF32 and ELF64 dumps, kdump note blobs and the kernel's
in-memory ``vmcoreinfo_note`` buffer.  Name and descriptor follow, each padded to 4 bytes.
"""

from __future__ import annotations

import struct

import construct as cs

from vmci.layouts import struct_format

NOTE_HEADER_SIZE = 12
NOTE_ALIGN = 4

NoteHeaderLE = cs.Struct(
    "namesz" / cs.Int32ul,
    "descsz" / cs.Int32ul,
    "type" / cs.Int32ul,
)
NoteHeaderBE = cs.Struct(
    "namesz" / cs.Int32ub,
    "descsz" / cs.Int32ub,
    "type" / cs.Int32ub,
)

_FORMATS = {"little": struct_format(NoteHeaderLE), "big": struct_format(NoteHeaderBE)}


def note_header(byteorder: str = "little") -> cs.Struct:
    """The construct declaration for ``byteorder`` ('little' or 'big')."""
    if byteorder == "little":
        return NoteHeaderLE
    if byteorder == "big":
        return NoteHeaderBE
    raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")


def note_header_struct(byteorder: str = "little") -> struct.Struct:
    """A ``struct.Struct`` derived from the declaration, for hot paths (scans)."""
    note_header(byteorder)  # validates the argument
    return _FORMATS[byteorder]


def align4(n: int) -> int:
    """``n`` rounded up to the note alignment (4 bytes, for both ELF classes)."""
    return (n + NOTE_ALIGN - 1) & ~(NOTE_ALIGN - 1)
