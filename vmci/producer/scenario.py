"""The generator's public face: a :class:`Scenario` in, a dump and its truth out.

``generate(scenario, out, fmt)`` runs the actors (:func:`vmci.producer.build.build`), writes the
guest as QEMU's dump writer (``elf``, ``elf-paging``, ``kdump``, ``kdump-flat``), a kdump
kernel's ``/proc/vmcore`` (``kexec``) or a raw image, and puts the truth
(:mod:`vmci.producer.truth`) and the saved device blobs beside it.

The producer's modules, bottom to top: :mod:`~vmci.producer.config` (the :class:`Scenario`,
configuration only), the actors, :mod:`~vmci.producer.state` (:class:`Guest`),
:mod:`~vmci.producer.faults`, :mod:`~vmci.producer.build`, :mod:`~vmci.producer.truth`, and this
module.  :class:`Scenario` lives in ``config`` rather than here because everything below
:func:`generate` needs the type, and this module must offer both without an import cycle; it is
re-exported here, the documented path.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from vmci.core.memory import PAGE_SIZE, PhysicalMemory, Range, RestrictedMemory, subtract
from vmci.errors import UsageError
from vmci.formats.raw import write_raw
from vmci.producer import qemu_dump as qd
from vmci.producer.build import build
from vmci.producer.config import FORMATS, Scenario, merge_flags
from vmci.producer.devices import RfcVmcoreinfoDevice, UpstreamVmcoreinfoDevice
from vmci.producer.state import Guest
from vmci.producer.truth import Truth, truth_data

__all__ = ["FORMATS", "Guest", "Scenario", "Truth", "build", "generate", "merge_flags", "system_ram",
           "write_dump"]


def system_ram(g: Guest) -> list[Range]:
    """What a kdump kernel exports in /proc/vmcore: System RAM minus page 0, the legacy area
    0xA0000-0xFFFFF and the crashkernel reservation."""
    holes = [Range(0, PAGE_SIZE), Range(0xA0000, 0x60000)] + ([g.crashkernel] if g.crashkernel else [])
    return subtract(g.layout.ram_ranges(), holes)


def write_dump(g: Guest, out: Any, fmt: str, *, compression: str = "zlib") -> dict[str, Any]:
    """Write ``g`` as ``fmt`` to the seekable binary file ``out``; returns facts about it."""
    if fmt not in FORMATS:
        raise UsageError(f"format is one of {', '.join(FORMATS)}, not {fmt!r}")
    s = g.scenario
    note = qd.guest_note(g.mem, g.vmcoreinfo_device)
    facts: dict[str, Any] = {"format": fmt, "guest_note": note.to_dict()}
    if fmt == "raw":
        mem = RestrictedMemory(g.mem, g.layout.ram_ranges())
        facts["size"] = write_raw(out, mem)
        return facts
    if fmt == "kexec":
        assert g.tables is not None
        first = g.mem.read(g.placed.note_paddr, 24 + -(-len(g.placed.text) // 4) * 4)
        notes = qd.kexec_notes(g.cpus, first)
        mem = RestrictedMemory(g.mem, system_ram(g))
        load = (g.tables.text_va, g.tables.text_pa, g.image["image_size"])
        facts.update(qd.write_kexec_vmcore(out, mem, notes, direct_map=g.tables.page_offset,
                                           kernel_load=load))
        facts["notes"] = len(notes)
        return facts
    notes = qd.qemu_notes(g.cpus, note)
    facts["notes"] = len(notes)
    ram: PhysicalMemory = g.mem
    if g.printk is not None and g.printk.holes:  # log fault "truncated": the dump ends early
        ram = RestrictedMemory(g.mem, subtract(g.mem.ranges, g.printk.holes))
    if fmt in ("elf", "elf-paging"):
        mappings = qd.paging_mappings(g.mem, g.cpus) if fmt == "elf-paging" else None
        facts.update(qd.write_qemu_elf(out, ram, notes, mappings=mappings,
                                       qemu_version=s.qemu_version_info))
    else:
        facts.update(qd.write_qemu_kdump(out, ram, notes, note, nr_cpus=len(g.cpus),
                                         compression=compression, flattened=fmt == "kdump-flat",
                                         phys_base_bug=s.phys_base_bug))
    return facts


def generate(scenario: Scenario, out_path: str | Path, fmt: str = "kdump-flat", *,
             compression: str = "zlib") -> Truth:
    """Build ``scenario``, write the dump to ``out_path`` and ``<out_path>.truth.json`` beside it,
    plus ``.addr-blob`` (RFC), ``.fw-cfg-record`` (upstream) and ``.vmgenid-addr`` (vmgenid)."""
    if fmt not in FORMATS:
        raise UsageError(f"format is one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "kexec" and not scenario.panic:
        scenario = replace(scenario, panic=True)
    g = build(scenario)
    out = Path(out_path)
    try:
        with out.open("wb") as f:
            dump = write_dump(g, f, fmt, compression=compression)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror}") from None
    data = truth_data(g, fmt, compression, dump)
    files: dict[str, str | None] = {"dump": out.name, "addr_blob": None, "fw_cfg_record": None,
                                    "vmgenid_addr": None}
    blobs: dict[str, bytes] = {}
    dev = g.vmcoreinfo_device
    if isinstance(dev, RfcVmcoreinfoDevice):
        blobs["addr_blob"] = bytes(dev.addr_le)
    elif isinstance(dev, UpstreamVmcoreinfoDevice):
        blobs["fw_cfg_record"] = bytes(dev.state)
    if g.vmgenid_device is not None:
        blobs["vmgenid_addr"] = bytes(g.vmgenid_device.addr_le)
    suffix = {"addr_blob": ".addr-blob", "fw_cfg_record": ".fw-cfg-record", "vmgenid_addr": ".vmgenid-addr"}
    for key, blob in blobs.items():
        p = out.with_name(out.name + suffix[key])
        p.write_bytes(blob)
        files[key] = p.name
    data["files"] = files
    truth_path = out.with_name(out.name + ".truth.json")
    truth_path.write_text(json.dumps(data, indent=2) + "\n")
    return Truth(out, truth_path, data, blobs.get("addr_blob"), blobs.get("fw_cfg_record"),
                 blobs.get("vmgenid_addr"))
