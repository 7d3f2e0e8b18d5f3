"""Run the discovery strategies in order, keep every finding, choose one text and say why.

Default order: the dump's own note, the kdump sub-header, the address blob and the fw_cfg
record (when the caller has them), the ACPI walk (F-segment RSDP only once something was
found, all RAM otherwise) and the memory scan only when nothing else found a text.  A
``strategies`` list runs exactly those, in the order above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmci.core.dump import Dump
from vmci.core.evidence import Evidence
from vmci.core.headers import KdumpHeader
from vmci.discover.finding import Candidate, Finding
from vmci.errors import UsageError
from vmci.machine.qemu_devices import RFC_OFFSETS

if TYPE_CHECKING:
    from vmci.core.saved_state import VmcoreinfoRecord

Progress = Callable[[int, int], None]

#: Strategy names, in the order they run and rank.
STRATEGIES = ("elf-note", "kdump-header", "address-blob", "fw-cfg-record", "acpi", "memory-scan")
_WHY = {
    "elf-note": "the dump's own note: what QEMU (or kexec) copied from the guest at dump time",
    "kdump-header": "the kdump sub-header's offset_vmcoreinfo, what crash reads",
    "address-blob": "the RFC device's saved address blob, walked as QEMU's vmcoreinfo_get() does",
    "fw-cfg-record": "the upstream fw_cfg record the guest registered",
    "acpi": "the RFC device page reached through ACPI (SSDT VMCOREIN, VCIA)",
    "memory-scan": "the only text found, by scanning memory",
}


@dataclass
class Discovery:
    """All findings, the chosen candidate and the reason."""

    findings: list[Finding] = field(default_factory=list)
    chosen: Candidate | None = None
    reason: str = ""
    evidence: Evidence = field(default_factory=Evidence)
    requested: list[str] = field(default_factory=list)  # strategies the caller asked for or fed

    @property
    def found(self) -> bool:
        return self.chosen is not None

    def finding(self, source: str) -> Finding | None:
        return next((f for f in self.findings if f.source == source), None)

    @property
    def candidates(self) -> list[Candidate]:
        return [c for f in self.findings for c in f.candidates]

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "source": self.chosen.source if self.chosen else None,
            "reason": self.reason,
            "requested": self.requested,
            "findings": [f.to_dict() for f in self.findings],
            "evidence": self.evidence.to_dict(),
        }


def find_vmcoreinfo(
    dump: Dump,
    *,
    addr_blob: bytes | None = None,
    fw_cfg_record: bytes | VmcoreinfoRecord | None = None,
    strategies: list[str] | None = None,
    rfc_offset: int = 40,
    progress: Progress | None = None,
) -> Discovery:
    """Locate and validate the VMCOREINFO of ``dump`` with every applicable strategy."""
    # Saved VM state (a migration stream) carries what QEMU kept outside guest RAM: the RFC
    # device's address blob or the upstream device's fw_cfg record.  The caller's wins.
    saved = dump.saved_state.devices if dump.saved_state else None
    if addr_blob is None and saved is not None:
        addr_blob = saved.vmcoreinfo_addr_blob
    if fw_cfg_record is None and saved is not None:
        fw_cfg_record = saved.vmcoreinfo_record
    if strategies is not None:
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown:
            raise UsageError(f"unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)}")
        if "address-blob" in strategies and addr_blob is None:
            raise UsageError("strategy address-blob needs the saved address blob (--addr-blob)")
        if "fw-cfg-record" in strategies and fw_cfg_record is None:
            raise UsageError("strategy fw-cfg-record needs the saved record (--fw-cfg-record)")
    if rfc_offset not in RFC_OFFSETS:
        raise UsageError(f"--rfc-offset is 40 or 36, not {rfc_offset}")
    wanted = list(strategies) if strategies is not None else None
    d = Discovery()
    d.requested = list(wanted or [])
    if wanted is None:
        d.requested += [
            s
            for s, given in (("address-blob", addr_blob), ("fw-cfg-record", fw_cfg_record))
            if given is not None
        ]
    mem = dump.memory

    def run(name: str) -> bool:
        return wanted is None or name in wanted

    def found() -> bool:
        return any(f.found for f in d.findings)

    if run("elf-note"):
        from vmci.discover.note import find_note

        d.findings.append(find_note(dump))
    if run("kdump-header") and (wanted is not None or isinstance(dump.header, KdumpHeader)):
        from vmci.discover.kdump_header import find_kdump_header

        d.findings.append(find_kdump_header(dump))
    if run("address-blob") and addr_blob is not None:
        from vmci.discover.blob import walk_blob

        d.findings.append(walk_blob(mem, addr_blob, rfc_offset=rfc_offset))
    if run("fw-cfg-record") and fw_cfg_record is not None:
        from vmci.discover.fw_cfg import check_record

        d.findings.append(check_record(mem, fw_cfg_record, byteorder=dump.byte_order))
    if run("acpi"):
        from vmci.discover.acpi_walk import walk_acpi

        # The F-segment first (SeaBIOS puts the RSDP there; a cheap look).  All of RAM (OVMF
        # puts it anywhere) only when asked, or when no RSDP is there and nothing has a text yet.
        f = walk_acpi(mem, rfc_offset=rfc_offset, scan_all=wanted is not None)
        if wanted is None and "rsdp" not in f.facts:
            if found():
                f.evidence.info("scope", "RSDP looked for in the F-segment only (a text was already found)")
            else:
                f = walk_acpi(mem, rfc_offset=rfc_offset, scan_all=True)
        d.findings.append(f)
    if (wanted is not None and "memory-scan" in wanted) or (wanted is None and not found()):
        from vmci.discover.scan import scan

        d.findings.append(scan(mem, byteorder=dump.byte_order, progress=progress))
    _choose(d)
    return d


def _choose(d: Discovery) -> None:
    ev = d.evidence
    for f in d.findings:
        ev.add(
            "strategy",
            f"{f.source}: " + ("found" if f.found else "nothing usable"),
            "ok" if f.found else "info",
        )
    valid = [f.chosen for f in d.findings if f.chosen is not None]
    if not valid:
        d.reason = "no strategy found a valid VMCOREINFO text"
        ev.fail("choice", d.reason)
        return
    best = min(valid, key=lambda c: STRATEGIES.index(c.source))
    d.chosen = best
    assert best.text is not None
    agree = [c.source for c in valid if c.text is not None and c.text.raw == best.text.raw]
    differ = [c.source for c in valid if c.source not in agree]
    d.reason = _WHY[best.source]
    if len(agree) > 1:
        d.reason += f"; {len(agree)} sources agree byte for byte ({', '.join(agree)})"
    if differ:
        d.reason += f"; DIFFERENT text from {', '.join(differ)}"
        ev.warn("choice", f"{best.source}: {d.reason}", best.paddr)
    else:
        ev.ok("choice", f"{best.source}: {d.reason}", best.paddr)
