"""What a user supplies, checked against what the dump itself shows.

A VMCOREINFO text given by hand (``vmci drgn --vmcoreinfo FILE``, ``program_from_dump(vmcoreinfo=...)``)
is compared with the dump's own text (its note or kdump header), with the vCPUs' page tables
(where the kernel really is) and with ``init_uts_ns`` at the place the text gives.  A disagreement
is a ``fail`` step naming both values, never a silent answer.  (The address blobs and fw_cfg
records a user gives are checked where they are walked: :mod:`vmci.analysis.vmgenid` against
ACPI, saved state and the page's content; the discovery strategies against every other source;
the ``address-blob-vs-acpi``, ``given-vs-saved-state``, ``fw-cfg-record-vs-note`` and
``raw-base`` checks of :mod:`vmci.analysis.checks` against the dump's ACPI tables, its saved
device state, its own note and where the kernel's ``init_uts_ns`` really lies.)
"""

from __future__ import annotations

from vmci.core.dump import Dump
from vmci.core.evidence import Evidence
from vmci.errors import VmciError
from vmci.kernel.vmcoreinfo import VmcoreInfo

#: The keys two texts of one running kernel share (CRASHTIME may be added at panic).
KEYS = ("OSRELEASE", "BUILD-ID", "KERNELOFFSET", "NUMBER(phys_base)")


def _differences(a: VmcoreInfo, b: VmcoreInfo) -> str:
    return "; ".join(f"{k} {a.get(k)} given vs {b.get(k)}" for k in KEYS if a.get(k) != b.get(k))


def check_given_vmcoreinfo(dump: Dump, text: bytes) -> Evidence:
    """Evidence on whether ``text`` describes the kernel in ``dump`` (see the module's text)."""
    from vmci.analysis.kaslr import kaslr_result, vmcoreinfo_for_kaslr
    from vmci.discover.memory_scan import uts_verdict

    ev = Evidence()
    given = VmcoreInfo.parse(text)
    if given.osrelease is None:
        ev.fail("given text", "no OSRELEASE= line: not a VMCOREINFO text")
        return ev
    try:
        own, source = vmcoreinfo_for_kaslr(dump)
    except VmciError:
        own, source = None, None
    paging = any(c.paging for c in dump.cpus)
    tables = kaslr_result(dump, vmcoreinfo=given, source="given") if paging else None
    conflict = tables is not None and tables.verdict == "conflict"
    if conflict:
        pt = tables.report.result if tables is not None and tables.report is not None else None
        where = (f"KERNELOFFSET {pt.kerneloffset:#x}, phys_base {pt.phys_base:#x}" if pt is not None
                 else "another place")
        says = f"KERNELOFFSET {given.get('KERNELOFFSET')}, NUMBER(phys_base) {given.get('NUMBER(phys_base)')}"
        ev.fail("given vs page tables", f"the given text says {says}; the vCPUs' page tables map the kernel "
                                        f"at {where}")
    elif tables is not None and tables.compared:
        ev.ok("given vs page tables", f"the page tables agree ({tables.verdict})")
    if own is not None and own.raw != given.raw:
        diff = _differences(given, own)
        if diff and (conflict or tables is None or not tables.compared):
            ev.fail("given vs dump", f"the dump's own text ({source}) differs: {diff}")
        elif diff:
            ev.warn("given vs dump", f"the dump's own text ({source}) differs ({diff}), but the page "
                                     "tables agree with the given one (a stale note?)")
    elif own is not None:
        ev.ok("given vs dump", f"the dump's own text ({source}) is the same")
    ok, why, paddr = uts_verdict(dump.memory, given)
    if ok is False:
        ev.fail("init_uts_ns", f"release {given.osrelease!r} is not where the given text places "
                               f"init_uts_ns ({paddr:#x}): {why}", paddr)
    elif ok:
        ev.ok("init_uts_ns", why, paddr)
    else:
        ev.info("init_uts_ns", why, paddr)
    return ev


__all__ = ["check_given_vmcoreinfo"]
