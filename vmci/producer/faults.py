"""Fault injection: each fault is a named function run by the actor it belongs to.

Stages, in the order :func:`vmci.producer.build.build` runs them (:data:`STAGES`):

``machine``       the QEMU command line (which device, which RFC revision)
``qemu-device``   QEMU's device state before the firmware copies it into RAM (the page's suppressor)
``guest-kernel``  the guest kernel after it placed its note (name, type, a stale kdump-kernel copy)
``guest-driver``  what the guest driver registers (version/format, paddr, size)
``after-boot``    guest RAM after everything ran (ACPI tables broken or missing)

The names, stages and descriptions are the scenario's vocabulary
(:data:`vmci.producer.config.FAULT_SPECS`); this module says what each one does.  A fault returns
a one-line description of what it changed; the scenario keeps it in the truth.  Faults act on
what the actors know (the tables the firmware published, the kernel's placement), never on what
a reader finds in RAM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmci.errors import UsageError
from vmci.layouts.acpi import SDT_CHECKSUM_OFFSET, SDT_HEADER_SIZE, SdtHeader, checksum8
from vmci.layouts.fw_cfg import RFC_OFFSET_V2
from vmci.producer import aml
from vmci.producer.config import FAULT_SPECS, STAGES, FaultSpec
from vmci.producer.devices import RfcVmcoreinfoDevice
from vmci.producer.firmware import PublishedTable
from vmci.producer.linux import capture_kernel, place_vmcoreinfo
from vmci.producer.qemu_dump import MAX_GUEST_NOTE_SIZE
from vmci.producer.state import Guest

__all__ = ["FAULTS", "STAGES", "Fault", "apply"]


@dataclass(frozen=True)
class Fault(FaultSpec):
    """A :class:`FaultSpec` with the function its actor runs."""

    apply: Callable[[Guest], str]


def _rfc(g: Guest, fault: str) -> RfcVmcoreinfoDevice:
    dev = g.vmcoreinfo_device
    if not isinstance(dev, RfcVmcoreinfoDevice):
        raise UsageError(f"fault {fault} needs the RFC vmcoreinfo device (device = 'rfc')")
    return dev


def _needs_device(g: Guest, fault: str) -> None:
    if g.vmcoreinfo_device is None:
        raise UsageError(f"fault {fault} needs a vmcoreinfo device (rfc or upstream)")


# -- machine -----------------------------------------------------------------------------------

def no_device(g: Guest) -> str:
    g.device_kind = "none"
    return "QEMU started without the vmcoreinfo device"


def rfc_offset_36(g: Guest) -> str:
    if g.device_kind != "rfc":
        raise UsageError("fault rfc-offset-36 needs the RFC vmcoreinfo device (device = 'rfc')")
    g.rfc_offset = RFC_OFFSET_V2
    return "the later RFC revision: content at page + 36 and WRITE_POINTER source offset 36"


# -- QEMU device ---------------------------------------------------------------------------------

def nonzero_suppressor(g: Guest) -> str:
    dev = _rfc(g, "nonzero-suppressor")
    # bytes 4..7 (an SDT length) come out huge, so OVMF's probe still fails
    dev.blob[: dev.offset] = bytes(0xA0 + i for i in range(dev.offset))
    return f"suppressor bytes 0..{dev.offset - 1} of the page are 0xa0, 0xa1, ... instead of zeros"


def suppressor_acpi_header(g: Guest) -> str:
    dev = _rfc(g, "suppressor-acpi-header")
    header = aml.sdt("OEMV", b"", oem_id="VMCI  ", oem_table_id="SUPPRESS", creator_id="VMCI")
    assert len(header) == SDT_HEADER_SIZE and checksum8(header) == 0
    dev.blob[:SDT_HEADER_SIZE] = header
    return "page bytes 0..35 are an SDT header 'OEMV' (length 36, checksum 0) that passes OVMF's probe"


# -- guest kernel -----------------------------------------------------------------------------------

def wrong_note_name(g: Guest) -> str:
    g.mem.write(g.placed.note_paddr + 12, b"VMCOREINFX\0")
    return f"note at {g.placed.note_paddr:#x} is named 'VMCOREINFX' (namesz still 11)"


def wrong_note_type(g: Guest) -> str:
    g.mem.write(g.placed.note_paddr + 8, (1).to_bytes(4, "little"))
    return f"note at {g.placed.note_paddr:#x} has n_type 1 instead of 0"


def stale_note(g: Guest) -> str:
    if g.crashkernel is None:
        raise UsageError("fault stale-note needs a crashkernel reservation")
    assert g.kernel is not None  # guest-kernel faults run after the kernel is laid out
    base = g.crashkernel.start
    capture = capture_kernel(g.kernel, base)
    image_end = base + g.image["image_size"]
    note, data = image_end, image_end + 0x2000
    g.stale = place_vmcoreinfo(g.mem, capture, note, data, crashtime=None, write_uts=True)
    return (f"a kdump kernel's stale copy: note at {note:#x}, data at {data:#x}, KERNELOFFSET=0, "
            f"phys_base {capture.phys_base}")


# -- guest driver -------------------------------------------------------------------------------------

def unknown_version(g: Guest) -> str:
    _needs_device(g, "unknown-version")
    if g.device_kind == "rfc":
        g.driver["version"] = 1
        return "the guest driver writes version 1 (only 0 is defined)"
    g.driver["guest_format"] = 2
    return "the guest writes guest_format 2 (only 1, ELF, is defined)"


def paddr_outside_ram(g: Guest) -> str:
    _needs_device(g, "paddr-outside-ram")
    lay = g.layout
    addr = (lay.below_4g if not lay.above_4g else (1 << 32) + lay.above_4g) + 0x100000
    if lay.machine == "virt":  # RAM from 1 GiB: past its end
        addr = max(r.end for r in lay.ranges) + 0x100000
    assert not g.mem.contains(addr)
    g.driver["paddr"] = addr
    return f"the registered note address {addr:#x} is not guest RAM"


def size_oversize(g: Guest) -> str:
    _needs_device(g, "size-oversize")
    g.driver["size"] = MAX_GUEST_NOTE_SIZE + 0x1000
    return f"the registered size is {MAX_GUEST_NOTE_SIZE + 0x1000:#x} (over QEMU's 1 MiB limit)"


def size_undersize(g: Guest) -> str:
    _needs_device(g, "size-undersize")
    g.driver["size"] = 8
    return "the registered size is 8 (less than a note header)"


def truncated_note(g: Guest) -> str:
    _needs_device(g, "truncated-note")
    g.driver["size"] = 64
    return "the registered size is 64: the note's header says it is longer"


# -- after boot -----------------------------------------------------------------------------------------

def _target_ssdt(g: Guest, fault: str) -> PublishedTable:
    ids = (["VMCOREIN"] if g.device_kind == "rfc" else []) + (["VMGENID"] if g.vmgenid_device else [])
    for table_id in ids:
        table = g.acpi_tables.find("SSDT", table_id) if g.acpi_tables else None
        if table is not None:
            return table
    raise UsageError(f"fault {fault} needs an SSDT (RFC vmcoreinfo device or vmgenid)")


def bad_acpi_checksum(g: Guest) -> str:
    t = _target_ssdt(g, "bad-acpi-checksum")
    old = g.mem.read(t.address + SDT_CHECKSUM_OFFSET, 1)[0]
    g.mem.write(t.address + SDT_CHECKSUM_OFFSET, bytes([(old + 0x5A) & 0xFF]))
    return f"SSDT {t.oem_table_id} at {t.address:#x}: checksum byte {old:#04x} -> {(old + 0x5A) & 0xFF:#04x}"


def _drop_entry(g: Guest, root_addr: int, size: int, target: int) -> None:
    """Rewrite the root table at ``root_addr`` (entries of ``size`` bytes) without ``target``."""
    length = SdtHeader.parse(g.mem.read(root_addr, SDT_HEADER_SIZE)).length
    root = g.mem.read(root_addr, length)
    body = root[SDT_HEADER_SIZE:]
    entries = [int.from_bytes(body[i : i + size], "little") for i in range(0, len(body) - size + 1, size)]
    kept = [e for e in entries if e != target]
    new = bytearray(root[:SDT_HEADER_SIZE] + b"".join(e.to_bytes(size, "little") for e in kept))
    new[4:8] = len(new).to_bytes(4, "little")
    new[SDT_CHECKSUM_OFFSET] = 0
    new[SDT_CHECKSUM_OFFSET] = (-checksum8(new)) & 0xFF
    g.mem.write(root_addr, bytes(new) + bytes(length - len(new)))


def missing_ssdt(g: Guest) -> str:
    t = _target_ssdt(g, "missing-ssdt")
    acpi = g.acpi_tables
    assert acpi is not None  # _target_ssdt found the table there
    _drop_entry(g, acpi.rsdt, 4, t.address)
    if acpi.xsdt:
        _drop_entry(g, acpi.xsdt, 8, t.address)
    g.mem.write(t.address, bytes(t.length))
    acpi.tables = [e for e in acpi.tables if e.address != t.address]
    return (f"SSDT {t.oem_table_id} at {t.address:#x} removed from the RSDT"
            + ("/XSDT" if acpi.xsdt else "") + " and its bytes zeroed")


def vmcoreinfo_lost(g: Guest) -> str:
    """The kernel's note and text pages overwritten (a dump from early boot, or scribbled memory):
    only page tables and the kernel image remain, the case KASLR discovery and synthesis serve."""
    p = g.placed
    g.mem.write(p.note_paddr, bytes(p.note_size))
    g.mem.write(p.data_paddr, bytes(len(p.text)))
    return f"vmcoreinfo_note at {p.note_paddr:#x} and vmcoreinfo_data at {p.data_paddr:#x} zeroed"


_ACTIONS: dict[str, Callable[[Guest], str]] = {
    "no-device": no_device,
    "rfc-offset-36": rfc_offset_36,
    "nonzero-suppressor": nonzero_suppressor,
    "suppressor-acpi-header": suppressor_acpi_header,
    "wrong-note-name": wrong_note_name,
    "wrong-note-type": wrong_note_type,
    "stale-note": stale_note,
    "unknown-version": unknown_version,
    "paddr-outside-ram": paddr_outside_ram,
    "size-oversize": size_oversize,
    "size-undersize": size_undersize,
    "truncated-note": truncated_note,
    "bad-acpi-checksum": bad_acpi_checksum,
    "missing-ssdt": missing_ssdt,
    "vmcoreinfo-lost": vmcoreinfo_lost,
}
if set(_ACTIONS) != set(FAULT_SPECS):  # the vocabulary and the implementations must not drift
    raise ImportError(f"faults without an action or a spec: {sorted(set(_ACTIONS) ^ set(FAULT_SPECS))}")

#: Every fault, in the order of :data:`vmci.producer.config.FAULT_SPECS`.
FAULTS: dict[str, Fault] = {
    name: Fault(spec.name, spec.stage, spec.description, _ACTIONS[name]) for name, spec in FAULT_SPECS.items()
}


def apply(g: Guest, stage: str) -> None:
    """Run the scenario's faults that belong to ``stage``, recording what each did."""
    for name in g.scenario.faults:
        fault = FAULTS[name]
        if fault.stage == stage:
            detail = fault.apply(g)
            g.faults.append({"name": name, "stage": stage, "detail": detail})
