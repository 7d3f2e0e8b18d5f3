"""Open a kdump-compressed dump (makedumpfile, QEMU ``kdump-*``): headers, memory, notes and
the text at ``offset_vmcoreinfo``, as one :class:`~vmci.core.dump.Dump`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vmci.core.dump import Dump, Note
from vmci.formats.kdump.header import read_info
from vmci.formats.kdump.memory import KdumpMemory
from vmci.formats.notes import conversion_record, cpus_from, decode_notes
from vmci.formats.source import Source


def read_kdump(src: Source, path: Path, *, container: str = "") -> Dump:
    """Open a kdump-compressed dump held in ``src`` (a file, or a flattened file's index)."""
    info = read_info(src)
    memory = KdumpMemory(src, info)
    header = info.header
    warnings = memory.warnings  # the same list: pages found corrupt later add to it
    notes: list[Note] = []
    order = header.byte_order
    if header.size_note and header.offset_note is not None:
        off, size = header.offset_note, header.size_note
        if off < 0 or off + size > src.size:
            warnings.append(f"notes at {off:#x} (+{size:#x}) lie outside the file; ignored")
        else:
            notes, bad = decode_notes(src.view(off, size), base=off, byteorder=order, where="kdump notes")
            warnings += bad
    if header.size_vmcoreinfo and header.offset_vmcoreinfo is not None:
        off, size = header.offset_vmcoreinfo, header.size_vmcoreinfo
        if off < 0 or off + size > src.size:
            warnings.append(f"offset_vmcoreinfo {off:#x} (+{size:#x}) lies outside the file")
        else:
            header = replace(header, vmcoreinfo_text=src.read(off, size))
    converted = conversion_record(notes)
    if converted is not None:
        header = replace(header, converted=converted)
    info.header = header
    from vmci.arch import canonical_name, guess, lookup

    machine = header.utsname.machine
    arch = canonical_name(machine) if machine else ""
    if not machine or lookup(machine) is None:
        # QEMU names only x86 (and s390x) machines and writes "Unknown" elsewhere (dump/dump.c
        # ELF_MACHINE_UNAME); older QEMUs wrote nothing: the notes and the text tell
        keys = {ln.partition(b"=")[0].decode("ascii", "replace")
                for ln in (header.vmcoreinfo_text or b"").split(b"\n") if b"=" in ln}
        sizes = {len(n.desc) for n in notes if n.name == "CORE" and n.type == 1}
        found = guess(prstatus_sizes=sizes, vmcoreinfo_keys=keys,
                      pointer_size=None if machine else (8 if header.abi == "lp64" else 4))
        arch = found.name if found is not None else (machine or "unknown")
    return Dump(
        path=path,
        format="kdump" if not container else f"kdump-{container}",
        description=f"kdump-compressed v{header.header_version} ({header.compression})"
        + (f", {container}" if container else "") + (", written by vmci convert" if converted else ""),
        memory=memory,
        arch=arch,
        byte_order=order,
        notes=notes,
        cpus=cpus_from(notes, arch, warnings, byteorder=order),
        header=header,
        warnings=warnings,
        _closers=[src],
    )
