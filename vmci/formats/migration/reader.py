"""QEMU migration streams (``QEVM`` v3): ``migrate "exec:cat > f"``, the state part of ``savevm`` and
the stream inside a libvirt save image, opened as a :class:`~vmci.core.dump.Dump`.

One walk of the stream (:mod:`.stream`) indexes RAM (:mod:`.ram`) and the device sections;
:mod:`.memory` maps the RAMBlocks to guest-physical addresses, :mod:`.cpu` decodes the vCPU
registers.  The typed header (:class:`~vmci.core.saved_state.SavedState`) carries the stream's
facts and the vmcoreinfo / vmgenid device state; ``facts`` is its JSON view.
"""

from __future__ import annotations

from pathlib import Path

from vmci.arch.aarch64.consts import SCTLR_EE
from vmci.core.dump import Dump
from vmci.core.saved_state import MigrationHeader, SavedDevices, SavedState
from vmci.formats.migration.cpu import cpus_from_stream
from vmci.formats.migration.memory import MemoryLayout, layout_memory
from vmci.formats.migration.stream import StreamIndex, index_stream, is_migration
from vmci.formats.source import Source
from vmci.machine import arch_of
from vmci.machine.qemu_devices import VMCOREINFO, VMGENID

__all__ = ["is_migration", "migration_header", "read_migration"]


def migration_header(stream: StreamIndex, layout: MemoryLayout, start: int) -> MigrationHeader:
    """The typed header of the stream indexed as ``stream`` from offset ``start``, mapped as ``layout``."""
    sent = sum(b.npages - b.counts()[2] for b in stream.blocks.values())
    return MigrationHeader(
        stream_version=stream.version,
        machine=stream.machine,
        machine_family=layout.family,
        family_guessed=layout.family_guessed,
        page_size=stream.page_size,
        capabilities=tuple(stream.capabilities),
        stream_offset=start,
        stream_end=stream.end,
        eof=stream.eof,
        section_footers=stream.footers,
        ram_sections=stream.ram_sections,
        ram_records=stream.ram_records,
        resent_pages=stream.ram_records - sent,
        vmdesc_offset=stream.vmdesc_offset,
        vmdesc_devices=len(stream.vmdesc.get("devices", ())) if stream.vmdesc else None,
        below_4g=layout.below_4g,
        ram_blocks=layout.blocks,
        sections=tuple(stream.sections),
        devices=SavedDevices(vmcoreinfo=stream.devices.get(VMCOREINFO), vmgenid=stream.devices.get(VMGENID)),
    )


def read_migration(src: Source, path: Path, *, start: int = 0, container: str = "") -> Dump:
    """Open the QEMU migration stream at offset ``start`` of ``src``."""
    stream = index_stream(src, start)
    layout = layout_memory(src, stream)
    cpus, cpu_warnings = cpus_from_stream(src, stream)
    big = any(c.regs.get("sctlr_el1", 0) & SCTLR_EE for c in cpus)  # an arm64 guest's EL1 data order
    saved = SavedState(migration_header(stream, layout, start))
    machine = stream.machine or "unknown machine"
    return Dump(
        path=path,
        format=container or "qemu-migration",
        description=f"QEMU migration stream ({machine}, {len(stream.blocks)} RAM blocks)"
        + (f" in a {container}" if container else ""),
        memory=layout.memory,
        arch=arch_of(layout.family),
        byte_order="big" if big else "little",
        cpus=cpus,
        header=saved,
        warnings=stream.warnings + list(layout.warnings) + cpu_warnings,
        _closers=[src],
    )
