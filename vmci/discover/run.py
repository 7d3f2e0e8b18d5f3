"""Run the discovery strategies in rank order, keep every finding, choose one text and say why.

By default every registered strategy that applies runs (:data:`vmci.discover.STRATEGIES`): the
dump's own note, the kdump sub-header, the address blob and the fw_cfg record (when the caller
has them), the ACPI walk (F-segment RSDP only once something was found, all RAM otherwise) and
the memory scan only when nothing else found a text (always, exhaustively, with ``scan="all"``).
A ``strategies`` list runs exactly those, in rank order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmci.core.dump import Dump
from vmci.core.evidence import Evidence
from vmci.discover import STRATEGIES, Inputs, Progress, Strategy, strategy
from vmci.discover.strategy import SCAN_MODES
from vmci.machine.qemu_devices import RFC_OFFSETS

if TYPE_CHECKING:
    from vmci.core.saved_state import VmcoreinfoRecord
from vmci.discover.finding import Candidate, Finding
from vmci.errors import UsageError


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
    scan: str = "auto",
) -> Discovery:
    """Locate and validate the VMCOREINFO of ``dump`` with every applicable strategy; ``scan`` is
    the memory scan's mode (``"all"``: exhaustive, and run even when another strategy found a text)."""
    return discover(dump, Inputs(addr_blob=addr_blob, fw_cfg_record=fw_cfg_record, rfc_offset=rfc_offset,
                                 strategies=None if strategies is None else tuple(strategies),
                                 progress=progress, scan=scan))


def with_saved_state(dump: Dump, inputs: Inputs) -> Inputs:
    """``inputs`` completed from the dump's saved VM state: a migration stream carries what QEMU
    kept outside guest RAM, the RFC device's address blob or the upstream device's fw_cfg
    record.  The caller's wins."""
    addr_blob, fw_cfg_record = inputs.addr_blob, inputs.fw_cfg_record
    saved = dump.saved_state.devices if dump.saved_state else None
    if addr_blob is None and saved is not None:
        addr_blob = saved.vmcoreinfo_addr_blob
    if fw_cfg_record is None and saved is not None:
        fw_cfg_record = saved.vmcoreinfo_record
    return inputs.replace(addr_blob=addr_blob, fw_cfg_record=fw_cfg_record)


def strategies_for(dump: Dump, inputs: Inputs, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that apply to ``dump`` with ``inputs`` (saved state included), in rank
    order: e.g. the recorded sources (:data:`vmci.discover.RECORDED`) worth reading on this dump."""
    wanted = {strategy(n).name for n in names}
    inputs = with_saved_state(dump, inputs)
    return [s.name for s in STRATEGIES if s.name in wanted and s.applies(dump, inputs)]


def select(dump: Dump, inputs: Inputs) -> list[Strategy]:
    """The strategies a run considers, in rank order; a usage error for a named strategy that
    is unknown or lacks its input, or an unknown RFC layout.  ``inputs`` include the saved state."""
    if inputs.strategies is not None:
        named = {strategy(n).name for n in inputs.strategies}
        chosen = [s for s in STRATEGIES if s.name in named]
        for s in chosen:
            if s.needs is not None and not s.applies(dump, inputs):
                raise UsageError(f"strategy {s.name} needs {s.needs}")
    else:
        chosen = [s for s in STRATEGIES if s.applies(dump, inputs)]
    if inputs.rfc_offset not in RFC_OFFSETS:
        raise UsageError(f"--rfc-offset is 40 or 36, not {inputs.rfc_offset}")
    if inputs.scan not in SCAN_MODES:
        raise UsageError(f"--scan is {', '.join(SCAN_MODES)}, not {inputs.scan!r}")
    return chosen


def discover(dump: Dump, inputs: Inputs) -> Discovery:
    """Run the strategies :func:`select` picks for ``inputs``; choose among their texts."""
    inputs = with_saved_state(dump, inputs)
    chosen = select(dump, inputs)
    d = Discovery()
    if inputs.strategies is not None:
        d.requested = list(inputs.strategies)
    else:  # the inputs the caller (or the saved state) fed
        d.requested = [s.name for s in chosen if s.needs is not None]
    for s in chosen:
        exhaustive = inputs.scan == "all"
        if s.last_resort and not inputs.explicit and not exhaustive and any(f.found for f in d.findings):
            continue
        d.findings.append(s.run(dump, inputs, tuple(d.findings)))
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
    best = min(valid, key=lambda c: strategy(c.source).rank)
    d.chosen = best
    assert best.text is not None
    agree = [c.source for c in valid if c.text is not None and c.text.raw == best.text.raw]
    differ = [c.source for c in valid if c.source not in agree]
    d.reason = strategy(best.source).why
    if len(agree) > 1:
        d.reason += f"; {len(agree)} sources agree byte for byte ({', '.join(agree)})"
    if differ:
        d.reason += f"; DIFFERENT text from {', '.join(differ)}"
        ev.warn("choice", f"{best.source}: {d.reason}", best.paddr)
    else:
        ev.ok("choice", f"{best.source}: {d.reason}", best.paddr)
