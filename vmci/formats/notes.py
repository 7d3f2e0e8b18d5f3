"""ELF note blobs as stored in a PT_NOTE segment or a kdump sub-header: decode and encode."""

from __future__ import annotations

from collections.abc import Iterable

from vmci.core.dump import CpuState, Note
from vmci.core.headers import CONVERSION_NOTE_NAME, ConversionRecord
from vmci.core.memory import Buffer
from vmci.layouts.note import NOTE_HEADER_SIZE, align4, note_header, note_header_struct


def decode_notes(
    blob: Buffer, *, base: int = 0, byteorder: str = "little", where: str = ""
) -> tuple[list[Note], list[str]]:
    """Every note in ``blob``; ``base`` is the blob's file offset (for ``Note.offset``).

    A note whose sizes run past the blob ends the walk with a warning: what came before is
    kept.  Zero-filled tails (a kernel's trailing empty note, padding) end it silently.
    """
    hdr = note_header_struct(byteorder)
    notes: list[Note] = []
    warnings: list[str] = []
    pos, end = 0, len(blob)
    mv = memoryview(blob)
    while pos + NOTE_HEADER_SIZE <= end:
        namesz, descsz, ntype = hdr.unpack_from(mv, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            break
        name_at = pos + NOTE_HEADER_SIZE
        desc_at = name_at + align4(namesz)
        nxt = desc_at + align4(descsz)
        if desc_at + descsz > end:
            warnings.append(
                f"{where or 'note'} at offset {base + pos:#x}: sizes (namesz {namesz}, descsz {descsz}) "
                f"run past the end of the notes ({end} bytes); later notes ignored"
            )
            break
        name = bytes(mv[name_at : name_at + namesz]).split(b"\0", 1)[0].decode("ascii", "replace")
        notes.append(Note(name, ntype, bytes(mv[desc_at : desc_at + descsz]), base + pos, where))
        pos = nxt
    return notes, warnings


def encode_note(name: str, ntype: int, desc: bytes, byteorder: str = "little") -> bytes:
    raw_name = name.encode() + b"\0" if name else b""
    head = note_header(byteorder).build({"namesz": len(raw_name), "descsz": len(desc), "type": ntype})
    return head + raw_name.ljust(align4(len(raw_name)), b"\0") + desc.ljust(align4(len(desc)), b"\0")


def encode_notes(notes: Iterable[Note | tuple[str, int, bytes]], byteorder: str = "little") -> bytes:
    out = bytearray()
    for n in notes:
        name, ntype, desc = (n.name, n.type, n.desc) if isinstance(n, Note) else n
        out += encode_note(name, ntype, desc, byteorder)
    return bytes(out)


def find_desc(blob: bytes, name: str, byteorder: str = "little") -> tuple[int, int] | None:
    """(offset, size) of the descriptor of the first note called ``name`` in ``blob``."""
    notes, _ = decode_notes(blob, byteorder=byteorder)
    for n in notes:
        if n.name == name and n.offset is not None:
            return (n.desc_offset or 0), len(n.desc)
    return None


def conversion_record(notes: Iterable[Note]) -> ConversionRecord | None:
    """What ``vmci convert`` recorded in the dump (its ``VMCI`` note), or None."""
    for n in notes:
        if n.name == CONVERSION_NOTE_NAME and n.type == 0:
            return ConversionRecord.parse(n.desc)
    return None


def cpus_from(notes: list[Note], machine: str, warnings: list[str], *,
              byteorder: str = "little") -> list[CpuState]:
    """CPU states from the notes, parsed by the architecture ``machine`` names (:mod:`vmci.arch`).

    A malformed CPU note costs a warning, not the dump; so do CPU notes of an architecture vmci
    has no parser for.
    """
    from vmci.arch import lookup
    from vmci.errors import FormatError, UnsupportedError

    arch = lookup(machine)
    try:
        if arch is None:
            raise UnsupportedError(f"no CPU note parser for architecture {machine!r}")
        return arch.cpus_from_notes(notes, byteorder=byteorder)
    except UnsupportedError as e:
        if any(n.name in ("CORE", "QEMU") for n in notes):
            warnings.append(f"CPU state notes not decoded: {e}")
        return []
    except FormatError as e:
        warnings.append(f"CPU state notes unreadable: {e}")
        return []
