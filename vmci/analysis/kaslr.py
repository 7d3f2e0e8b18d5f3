"""KASLR for a dump as ``vmci kaslr`` and ``vmci analyze`` report it: one typed :class:`KaslrResult`.

This is the layer that runs discovery (:func:`vmcoreinfo_for_kaslr`) and applies the policy of
which VMCOREINFO to compare with; the comparison itself is :func:`vmci.kernel.kaslr.kaslr_report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vmci.core.dump import Dump
from vmci.core.headers import KdumpHeader
from vmci.errors import VmciError
from vmci.kernel.kaslr import KaslrReport, decide, kaslr_report
from vmci.kernel.symbols import KernelSymbols
from vmci.kernel.vmcoreinfo import VmcoreInfo


@dataclass
class KaslrResult:
    """The ``kaslr`` object of ``analyze --json`` and ``vmci kaslr --json`` (schema 1).

    ``kerneloffset``/``phys_base`` are the answer (None: unknown), ``method`` where it came from
    (``vmcoreinfo``, ``page-tables``, ``idt``, ``vmcoreinfo+page-tables``), ``verdict`` one of
    :data:`vmci.kernel.kaslr.VERDICTS`.  ``report`` is the full comparison; it is None when no vCPU
    had paging on (no second source to compare): then the JSON is the short form
    ``{kerneloffset, phys_base, method}``, as it always was.
    """

    kerneloffset: int | None
    phys_base: int | None
    method: str | None
    verdict: str
    report: KaslrReport | None = None
    kernels: tuple[dict[str, Any], ...] = ()
    """When the dump holds more than one kernel (a kdump capture kernel ran after a crash): each
    kernel's role, release, KERNELOFFSET and phys_base, and whether the page tables are its."""

    @property
    def compared(self) -> bool:
        """True when the page tables were a second source (the full form)."""
        return self.report is not None

    @property
    def failed(self) -> bool:
        """No answer, or the sources conflict: ``vmci kaslr`` exits 1."""
        return self.kerneloffset is None or self.verdict == "conflict"

    @property
    def warnings(self) -> list[str]:
        return list(self.report.warnings) if self.report is not None else []

    def to_dict(self) -> dict[str, Any]:
        if self.report is not None:
            out = self.report.to_dict()
            if self.kernels:  # only on dumps with two kernels: schema-1 output elsewhere unchanged
                out["verdict"] = self.verdict
                out["kernels"] = list(self.kernels)
            return out
        return {"kerneloffset": self.kerneloffset, "phys_base": self.phys_base, "method": self.method}


def kaslr_result(dump: Dump, *, vmcoreinfo: VmcoreInfo | None, source: str | None,
                 symbols: KernelSymbols | None = None, deep: bool = False) -> KaslrResult:
    """Compare ``vmcoreinfo`` (found by ``source``) with the page tables when a vCPU had paging on;
    otherwise the text's values alone."""
    if any(c.paging for c in dump.cpus):
        rep = kaslr_report(dump, vmcoreinfo=vmcoreinfo, vmcoreinfo_source=source, symbols=symbols, deep=deep)
        result = KaslrResult(rep.kerneloffset, rep.phys_base, rep.method, rep.verdict, rep)
        return _two_kernels(dump, vmcoreinfo, result)
    short = KaslrReport()
    decide(short, None, _safe_kerneloffset(vmcoreinfo), _phys_base_value(vmcoreinfo))
    return KaslrResult(short.kerneloffset, short.phys_base, short.method, short.verdict)


def _two_kernels(dump: Dump, vmcoreinfo: VmcoreInfo | None, result: KaslrResult) -> KaslrResult:
    """A conflict between a crashed kernel's text (it has ``CRASHTIME``) and the page tables is
    what a dump taken while a kdump capture kernel runs looks like: the vCPUs run the capture
    kernel.  When another VMCOREINFO in RAM matches the page tables, say so (verdict
    ``kdump-capture``, both kernels listed) instead of a bare conflict."""
    rep = result.report
    if vmcoreinfo is None or rep is None or rep.result is None:
        return result
    vcpus_disagree = any(w.startswith("vCPUs disagree") for w in rep.warnings)
    if result.verdict != "conflict" and not vcpus_disagree:
        return result
    try:
        if vmcoreinfo.crashtime is None:
            return result
    except (VmciError, ValueError):
        return result
    from vmci.analysis.kernel_log import kernels_in_dump

    try:
        kernels = kernels_in_dump(dump)
    except VmciError:
        return result
    pt = rep.page_tables or {}
    rows = tuple({**k.to_dict(), "page_tables": (k.kerneloffset, k.phys_base) ==
                  (pt.get("kerneloffset"), pt.get("phys_base"))} for k in kernels)
    if not any(r["role"] == "capture" for r in rows) or not (
            vcpus_disagree or any(r["page_tables"] and r["role"] == "capture" for r in rows)):
        return result
    return KaslrResult(result.kerneloffset, result.phys_base, result.method, "kdump-capture", rep, rows)


def kaslr_section(dump: Dump, *, vmcoreinfo: VmcoreInfo | None, source: str | None,
                  symbols: KernelSymbols | None = None, deep: bool = False) -> dict[str, Any]:
    """:func:`kaslr_result` as the JSON object (``KaslrResult.to_dict``)."""
    return kaslr_result(dump, vmcoreinfo=vmcoreinfo, source=source, symbols=symbols, deep=deep).to_dict()


def vmcoreinfo_for_kaslr(dump: Dump, *, scan: bool = False,
                         addr_blob: bytes | None = None) -> tuple[VmcoreInfo | None, str | None]:
    """The VMCOREINFO to compare the page tables with, and its source: the dump's own note / kdump
    header, the address blob when given, and a migration stream's saved device state;
    ``scan=True`` runs every discovery strategy, memory scan included."""
    from vmci.discover.run import find_vmcoreinfo

    strategies = None
    if not scan:
        saved = dump.saved_state.devices if dump.saved_state else None  # a saved VM's device state
        strategies = ["elf-note"] + (["kdump-header"] if isinstance(dump.header, KdumpHeader) else [])
        if addr_blob is not None or (saved is not None and saved.vmcoreinfo_addr_blob is not None):
            strategies.append("address-blob")
        if saved is not None and saved.vmcoreinfo_record is not None:
            strategies.append("fw-cfg-record")
    chosen = find_vmcoreinfo(dump, addr_blob=addr_blob, strategies=strategies).chosen
    return (chosen.text, chosen.source) if chosen else (None, None)


def kaslr_for_dump(dump: Dump, *, scan: bool = False, addr_blob: bytes | None = None,
                   symbols: KernelSymbols | None = None, deep: bool = False) -> KaslrReport:
    """:func:`vmci.kernel.kaslr.kaslr_report` with the VMCOREINFO of :func:`vmcoreinfo_for_kaslr`."""
    text, source = vmcoreinfo_for_kaslr(dump, scan=scan, addr_blob=addr_blob)
    return kaslr_report(dump, vmcoreinfo=text, vmcoreinfo_source=source, symbols=symbols, deep=deep)


def _safe_kerneloffset(vi: VmcoreInfo | None) -> int | None:
    try:
        return vi.kerneloffset if vi is not None else None
    except VmciError:
        return None


def _phys_base_value(vi: VmcoreInfo | None) -> int | None:
    try:
        pb = vi.phys_base if vi is not None else None
    except VmciError:
        return None
    return None if pb is None or pb.legacy_symbol else pb.value


__all__ = ["KaslrResult", "kaslr_for_dump", "kaslr_result", "kaslr_section", "vmcoreinfo_for_kaslr"]
