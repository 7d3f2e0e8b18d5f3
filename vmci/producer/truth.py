"""The producer's truth: what every actor did, as the sidecar ``<dump>.truth.json`` records it.

Each value comes from an actor's own record: guest RAM layout, QEMU's devices and ACPI build,
where the firmware put each blob and which tables it handed the OS (:class:`PublishedAcpi`),
the kernel's placement and page tables, the driver's writes, the faults applied.  Nothing here
reads guest RAM back through vmci's readers: the truth is the independent oracle they are
tested against.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmci.producer.devices import RfcVmcoreinfoDevice, UpstreamVmcoreinfoDevice, VmgenidDevice
from vmci.producer.firmware import PublishedAcpi
from vmci.producer.linux import PlacedVmcoreinfo
from vmci.producer.state import Guest

__all__ = ["Truth", "acpi_truth", "expected_findings", "truth_data"]


@dataclass
class Truth:
    """What :func:`vmci.producer.scenario.generate` wrote: the truth sidecar's content and the saved blobs."""

    path: Path
    truth_path: Path
    data: dict[str, Any]
    addr_blob: bytes | None = None
    fw_cfg_record: bytes | None = None
    vmgenid_addr_blob: bytes | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def expected(self, strategy: str) -> dict[str, Any]:
        return self.data["expected"][strategy]


def _note_ok(g: Guest) -> bool:
    names = {f["name"] for f in g.faults}
    return not names & {"wrong-note-name", "wrong-note-type"}


def expected_findings(g: Guest, fmt: str, dump: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What each discovery strategy should find, as the producer knows it.

    A note counts as valid when named VMCOREINFO, of type 0 and complete.  ``found`` says a valid
    text is reachable that way; ``note_paddr`` where the note is in guest RAM.
    """
    names = {f["name"] for f in g.faults}
    note = dump["guest_note"]
    # QEMU appends whatever note header it finds (a zeroed one too, as a 12-byte nameless note);
    # only a note named VMCOREINFO carries the text
    appended_ok = (note["appended"] and note["paddr"] == g.placed.note_paddr and _note_ok(g)
                   and note["name"] == "VMCOREINFO")
    kind = g.device_kind
    blob = g.vmcoreinfo_device.address if isinstance(g.vmcoreinfo_device, RfcVmcoreinfoDevice) else 0
    ssdt_ok = kind == "rfc" and not names & {"missing-ssdt", "bad-acpi-checksum"}
    has_notes = fmt not in ("raw", "migration")
    in_ram = "wrong-note-name" not in names and "vmcoreinfo-lost" not in names
    out: dict[str, dict[str, Any]] = {
        "elf-note": {"applicable": has_notes,
                     "found": has_notes and (appended_ok or (fmt == "kexec" and _note_ok(g)))},
        "kdump-header": {"applicable": fmt.startswith("kdump"),
                         "found": fmt.startswith("kdump") and appended_ok},
        "address-blob": {"applicable": kind == "rfc" and bool(blob), "found": kind == "rfc" and appended_ok,
                         "blob": blob or None},
        "fw-cfg-record": {"applicable": kind == "upstream", "found": kind == "upstream" and appended_ok},
        "acpi": {"applicable": kind == "rfc", "found": ssdt_ok and appended_ok},
        "memory-scan": {"applicable": True,
                        "found": in_ram or g.stale is not None},
    }
    for v in out.values():
        v["note_paddr"] = g.placed.note_paddr if v["found"] else None
    scan = [g.placed.note_paddr] if in_ram else []
    out["memory-scan"]["notes_in_ram"] = scan + ([g.stale.note_paddr] if g.stale else [])
    return out


def acpi_truth(acpi: PublishedAcpi | None) -> dict[str, Any]:
    """The ``acpi`` section: the RSDP the firmware published, its root tables, and the tables
    they list at dump time (``"SIG:OEM table id"`` -> address, the first of equal names)."""
    if acpi is None:
        return {"rsdp": None, "rsdp_revision": None, "rsdt": None, "xsdt": None, "tables": {}}
    tables: dict[str, int] = {}
    for t in acpi.tables:
        tables.setdefault(t.key, t.address)
    return {"rsdp": acpi.rsdp, "rsdp_revision": acpi.revision, "rsdt": acpi.rsdt, "xsdt": acpi.xsdt,
            "tables": tables}


def truth_data(g: Guest, fmt: str, compression: str, dump: dict[str, Any]) -> dict[str, Any]:
    """The truth sidecar's content for ``g`` written as ``fmt`` (``dump``: the writer's facts)."""
    s, k, t, fw = g.scenario, g.kernel, g.tables, g.firmware
    assert k is not None and g.banner is not None
    placed = g.placed
    uts_off = k.value("OFFSET(uts_namespace.name)")
    dev = g.vmcoreinfo_device
    device: dict[str, Any] = {"kind": g.device_kind}
    if isinstance(dev, RfcVmcoreinfoDevice):
        assert fw is not None  # the RFC device's page is a firmware allocation
        page = fw.allocations[RfcVmcoreinfoDevice.FILE].address
        device.update({"rfc_offset": dev.offset, "page": page, "vcia": page, "blob": dev.address,
                       "addr_blob": bytes(dev.addr_le).hex(), "content_addr": g.driver_dest,
                       "content": {k2: g.driver[k2] for k2 in ("version", "paddr", "size")},
                       "ssdt": g.ssdts.get("VMCOREIN")})
    elif isinstance(dev, UpstreamVmcoreinfoDevice):
        device.update({"record": dev.record(), "record_hex": bytes(dev.state).hex(),
                       "has_vmcoreinfo": dev.has_vmcoreinfo})
    vmgenid = None
    if g.vmgenid_device is not None:
        assert fw is not None
        vg = g.vmgenid_device
        page = fw.allocations[VmgenidDevice.FILE].address
        vmgenid = {"guid": str(vg.guid), "page": page, "vgia": page, "guid_addr": vg.address,
                   "addr_blob": bytes(vg.addr_le).hex(), "ssdt": g.ssdts.get("VMGENID")}

    def placed_dict(p: PlacedVmcoreinfo) -> dict[str, Any]:
        return {"note_paddr": p.note_paddr, "desc_paddr": p.desc_paddr, "data_paddr": p.data_paddr,
                "note_size": p.note_size, "text_size": len(p.text),
                "text_sha256": hashlib.sha256(p.text).hexdigest(), "crashtime": p.crashtime,
                "osrelease": p.layout.osrelease, "kaslr_offset": p.layout.kaslr_offset,
                "phys_base": p.layout.phys_base, "uts_paddr": p.uts_paddr}

    kernel: dict[str, Any] = {
        "profile": k.profile.name, "osrelease": k.osrelease, "build_id": k.build_id_hex,
        "image": s.image_kind, "kaslr_offset": k.kaslr_offset, "phys_base": k.phys_base}
    a = g.arm_tables
    if a is not None:  # aarch64: phys_base is PHYS_OFFSET; the image is placed by kimage_voffset
        kernel.update({
            "text_va": a.text_va, "text_pa": a.text_pa, "stext_va": a.stext_va, "image_size": a.image.size,
            "kimage_voffset": a.kimage_voffset, "phys_offset": a.phys_offset, "page_size": 1 << a.page_shift,
            "va_bits": a.va_bits, "byteorder": a.byteorder, "kpti": s.pti, "page_offset": a.page_offset,
            "swapper_pg_dir": a.kernel_virt(a.swapper_pg_dir), "pgd_paddr": a.swapper_pg_dir,
            "tramp_pg_dir_paddr": a.tramp_pg_dir, "module_va": a.module_va})
        cpus = [{"index": c.index, "pc": c.regs["pc"], "sp": c.regs["sp"], "pstate": c.regs["pstate"],
                 "ttbr1_el1": c.regs.get("ttbr1_el1"), "tcr_el1": c.regs.get("tcr_el1")} for c in g.cpus]
    else:
        assert t is not None
        kernel.update({
            "text_va": t.text_va, "text_pa": t.text_pa, "image_size": t.image_size, "la57": t.la57,
            "pti": t.user_pgd is not None, "page_offset": t.page_offset,
            "swapper_pg_dir": t.swapper_pg_dir, "pgd_paddr": t.pgd})
        cpus = [{"index": c.index, "cr0": c.cr0, "cr3": c.cr3, "cr4": c.cr4, "rip": c.regs["rip"],
                 "gdt_base": c.gdt_base, "idt_base": c.idt_base} for c in g.cpus]
    kernel.update({
        "init_uts_ns": k.runtime("init_uts_ns"),
        "uts_release_vaddr": k.runtime("init_uts_ns") + uts_off + 130, "uts_paddr": placed.uts_paddr,
        "linux_banner": g.banner[0], "linux_banner_paddr": g.banner[1],
        "linux_banner_text": g.banner[2].decode()})
    if t is not None:
        kernel["idt"] = t.idt_va
    kernel["crashkernel"] = [g.crashkernel.start, g.crashkernel.size] if g.crashkernel else None
    out: dict[str, Any] = {
        "schema": 1,
        "generator": "vmci generate",
        "format": fmt,
        "compression": compression if fmt.startswith("kdump") else None,
        "scenario": s.to_dict(),
        "ram": g.layout.to_dict(),
        "kernel": kernel,
        "vmcoreinfo": placed_dict(placed),
        "stale_note": placed_dict(g.stale) if g.stale else None,
        "cpus": cpus,
        "cr3s": sorted({c.cr3 for c in g.cpus if c.cr3 is not None}),
        "acpi": acpi_truth(g.acpi_tables),
        "device": device,
        "vmgenid": vmgenid,
        "firmware": None if fw is None else {
            "flavor": s.firmware,
            "allocations": {n: {"address": a.address, "size": a.size, "opaque": a.opaque}
                            for n, a in fw.allocations.items()},
            "installed": [[sig, a] for sig, a in fw.installed], "log": fw.log},
        "dump": dump,
        "expected": expected_findings(g, fmt, dump),
        "faults": g.faults,
    }
    if g.printk is not None:  # the records the guest kernel logged (scenario ``log``), as written
        out["printk"] = g.printk.to_dict()
    if g.mem_map is not None:  # opt-in (Scenario.mem_map): absent from earlier truths
        out["mem_map"] = g.mem_map.to_dict()
    return out
