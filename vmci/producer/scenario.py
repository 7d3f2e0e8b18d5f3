"""The generator's public face: a :class:`Scenario` in, a dump and its truth out.

``generate(scenario, out, fmt)`` runs the actors (:func:`vmci.producer.build.build`), writes the
guest as QEMU's dump writer (``elf``, ``elf-paging``, ``kdump``, ``kdump-flat``), a kdump
kernel's ``/proc/vmcore`` (``kexec``), QEMU's migration stream of the stopped guest
(``migration``: RAM, the vCPUs, the vmcoreinfo/vmgenid device state) or a raw image, and puts the truth
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
    if fmt == "migration":
        facts.update(_write_migration(g, out))
        return facts
    arch, order = s.arch, s.byteorder
    if fmt == "kexec":
        first = g.mem.read(g.placed.note_paddr, 24 + -(-len(g.placed.text) // 4) * 4)
        notes = qd.kexec_notes(g.cpus, first, arch=arch, byteorder=order)
        mem = RestrictedMemory(g.mem, system_ram(g))
        if g.arm_tables is not None:
            t = g.arm_tables
            load = (t.text_va, t.text_pa, g.image["image_size"])
            direct = (t.page_offset - t.phys_offset) & ((1 << 64) - 1)
        else:
            assert g.tables is not None
            load = (g.tables.text_va, g.tables.text_pa, g.image["image_size"])
            direct = g.tables.page_offset
        facts.update(qd.write_kexec_vmcore(out, mem, notes, direct_map=direct, kernel_load=load, arch=arch,
                                           byteorder=order))
        facts["notes"] = len(notes)
        return facts
    notes = qd.qemu_notes(g.cpus, note, arch=arch, byteorder=order)
    facts["notes"] = len(notes)
    ram: PhysicalMemory = g.mem
    if g.printk is not None and g.printk.holes:  # log fault "truncated": the dump ends early
        ram = RestrictedMemory(g.mem, subtract(g.mem.ranges, g.printk.holes))
    if fmt in ("elf", "elf-paging"):
        mappings = None
        if fmt == "elf-paging":  # QEMU's arm target has no paging hook: identity mappings
            mappings = ([(r.start, r.start, r.size) for r in g.mem.ranges] if arch == "aarch64"
                        else qd.paging_mappings(g.mem, g.cpus))
        facts.update(qd.write_qemu_elf(out, ram, notes, mappings=mappings, qemu_version=s.qemu_version_info,
                                       arch=arch, byteorder=order))
    else:
        facts.update(qd.write_qemu_kdump(out, ram, notes, note, nr_cpus=len(g.cpus),
                                         compression=compression, flattened=fmt == "kdump-flat",
                                         phys_base_bug=s.phys_base_bug, arch=arch, byteorder=order))
    return facts


def _write_migration(g: Guest, out: Any) -> dict[str, Any]:
    """QEMU's migration stream of the stopped guest: RAM, the vCPUs (with the system registers an
    arm64 vCPU saves), the vmcoreinfo device's state and vmgenid's address blob."""
    from vmci.core.saved_state import VmcoreinfoRecord
    from vmci.formats.migration.cpu_writer import write_migration_with_cpus
    from vmci.formats.migration.writer import standard_devices

    s = g.scenario
    dev = g.vmcoreinfo_device
    record = rfc_addr = None
    if isinstance(dev, UpstreamVmcoreinfoDevice):
        r = dev.record()
        record = VmcoreinfoRecord(r["host_format"], r["guest_format"], r["size"], r["paddr"],
                                  dev.has_vmcoreinfo)
    elif isinstance(dev, RfcVmcoreinfoDevice):
        rfc_addr = int.from_bytes(bytes(dev.addr_le), "little")
    vmgenid = int.from_bytes(bytes(g.vmgenid_device.addr_le), "little") if g.vmgenid_device else None
    devices = standard_devices(vmcoreinfo_record=record, vmcoreinfo_rfc_addr=rfc_addr, vmgenid_addr=vmgenid)
    # (QEMU also sends virt's two 64 MiB pflash blocks, all zero without firmware: left out here)
    machine = "virt-7.2" if s.arch == "aarch64" else ("pc-q35-7.2" if s.machine == "q35" else "pc-i440fx-7.2")
    size = write_migration_with_cpus(out, g.mem, g.cpus, devices=devices, arch=s.arch, machine=machine)
    return {"machine": machine, "size": size, "devices": [d.idstr for d in devices],
            "cpus": len(g.cpus)}


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
