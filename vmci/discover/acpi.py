"""The ACPI walk to the RFC vmcoreinfo page, for dumps without the saved address blob.

RSDP (F-segment, else any 16-byte-aligned spot in RAM) -> RSDT/XSDT -> the SSDT whose OEM
table id is ``VMCOREIN`` -> its leading ``Name(VCIA, DWordConst)``, which firmware patched with
the page base (+0, not +40) -> the same page checks as the blob walk.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmci.core.dump import Dump
from vmci.core.memory import PhysicalMemory
from vmci.discover.address_blob import walk_page
from vmci.discover.finding import Candidate, Finding
from vmci.discover.guest_note import conclude
from vmci.discover.strategy import Inputs
from vmci.firmware.acpi import TABLE_FOUND, find_named_dword, find_rsdp
from vmci.layouts.fw_cfg import RFC_OFFSET_V1
from vmci.machine.qemu_devices import RFC_OFFSETS

NAME = "acpi"
OEM_TABLE_ID = "VMCOREIN"
VAR = "VCIA"


class AcpiStrategy:
    """The RFC device's page through ACPI: F-segment RSDP first; all of RAM when the caller named
    this strategy, or when no RSDP is in the F-segment and nothing else found a text."""

    name = NAME
    rank = 50
    why = "the RFC device page reached through ACPI (SSDT VMCOREIN, VCIA)"
    needs = None
    device = True
    searches = True
    last_resort = False

    def applies(self, dump: Dump, inputs: Inputs) -> bool:
        return True

    def run(self, dump: Dump, inputs: Inputs, earlier: Sequence[Finding] = ()) -> Finding:
        mem = dump.memory
        # The F-segment first (SeaBIOS puts the RSDP there; a cheap look).  All of RAM (OVMF
        # puts it anywhere) only when asked, or when no RSDP is there and nothing has a text yet.
        f = walk_acpi(mem, rfc_offset=inputs.rfc_offset, scan_all=inputs.explicit)
        if not inputs.explicit and "rsdp" not in f.facts:
            if any(e.found for e in earlier):
                f.evidence.info("scope", "RSDP looked for in the F-segment only (a text was already found)")
            else:
                f = walk_acpi(mem, rfc_offset=inputs.rfc_offset, scan_all=True)
        return f


def walk_acpi(mem: PhysicalMemory, *, rfc_offset: int = RFC_OFFSET_V1, scan_all: bool = True) -> Finding:
    """Find the RFC page through ACPI and walk it to the note.

    ``scan_all=False`` looks for the RSDP in the F-segment only (cheap; SeaBIOS puts it there).
    ``facts["present"]`` is true once the ``VMCOREIN`` SSDT was seen: later failures are then
    faults of a device that exists, not its absence.
    """
    if rfc_offset not in RFC_OFFSETS:
        raise ValueError(f"rfc_offset is 40 or 36, not {rfc_offset}")
    finding = Finding(NAME)
    cand = Candidate(NAME, None, None, None)
    ev = cand.evidence
    rsdp, sub = find_rsdp(mem, scan_all=scan_all)
    ev.steps.extend(sub.steps)
    finding.facts["present"] = False
    if rsdp is not None:
        finding.facts["rsdp"] = rsdp.address
        vcia, sub = find_named_dword(mem, OEM_TABLE_ID, VAR, rsdp)
        ev.steps.extend(sub.steps)
        finding.facts["present"] = sub.has(TABLE_FOUND)
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
    conclude(finding, cand)
    return finding
