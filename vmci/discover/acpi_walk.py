"""The ACPI walk to the RFC vmcoreinfo page, for dumps without the saved address blob.

RSDP (F-segment, else any 16-byte-aligned spot in RAM) -> RSDT/XSDT -> the SSDT whose OEM
table id is ``VMCOREIN`` -> its leading ``Name(VCIA, DWordConst)``, which firmware patched with
the page base (+0, not +40) -> the same page checks as the blob walk.
"""

from __future__ import annotations

from vmci.core.memory import PhysicalMemory
from vmci.discover.blob import _conclude, walk_page
from vmci.discover.finding import Candidate, Finding
from vmci.firmware.acpi import find_named_dword, find_rsdp
from vmci.layouts.fw_cfg import RFC_OFFSET_V1
from vmci.machine.qemu_devices import RFC_OFFSETS

OEM_TABLE_ID = "VMCOREIN"
VAR = "VCIA"


def walk_acpi(mem: PhysicalMemory, *, rfc_offset: int = RFC_OFFSET_V1, scan_all: bool = True) -> Finding:
    """Find the RFC page through ACPI and walk it to the note.

    ``scan_all=False`` looks for the RSDP in the F-segment only (cheap; SeaBIOS puts it there).
    ``facts["present"]`` is true once the ``VMCOREIN`` SSDT was seen: later failures are then
    faults of a device that exists, not its absence.
    """
    if rfc_offset not in RFC_OFFSETS:
        raise ValueError(f"rfc_offset is 40 or 36, not {rfc_offset}")
    finding = Finding("acpi")
    cand = Candidate("acpi", None, None, None)
    ev = cand.evidence
    rsdp, sub = find_rsdp(mem, scan_all=scan_all)
    ev.steps.extend(sub.steps)
    finding.facts["present"] = False
    if rsdp is not None:
        finding.facts["rsdp"] = rsdp.address
        vcia, sub = find_named_dword(mem, OEM_TABLE_ID, VAR, rsdp)
        ev.steps.extend(sub.steps)
        finding.facts["present"] = any(s.action.startswith("SSDT with OEM table id") and s.paddr is not None
                                       for s in sub.steps)
        if vcia is not None:
            finding.facts["vcia"] = vcia
            if vcia == 0:
                ev.fail("VCIA", "VCIA is 0: firmware did not link the page (_STA reports absent)")
            elif vcia % 4096:
                ev.fail("VCIA", f"VCIA {vcia:#x} is not page-aligned: the blob is a 4 KiB-aligned "
                                "firmware allocation", vcia)
            else:
                ev.ok("VCIA", f"page base {vcia:#x}", vcia)
                walk_page(mem, vcia, rfc_offset, cand)
    _conclude(finding, cand)
    return finding
