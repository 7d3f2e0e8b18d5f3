"""The kernel log of a dump, and its panic: which kernel, which VMCOREINFO, what it says.

A dump can hold more than one kernel.  When the hypervisor dumps a VM that panicked into a
kdump capture kernel (``crashkernel=``, ``kexec -p``), guest RAM holds two VMCOREINFO notes:
the crashed kernel's, which carries ``CRASHTIME=`` (``crash_save_vmcoreinfo()`` appends it on
the panic path, kernel/crash_core.c), and the capture kernel's; the vCPUs' page tables are then
the capture kernel's.  :func:`kernels_in_dump` lists every kernel the discovery strategies found
(the memory scan included), :func:`read_kernel_log` reads the log of the one asked for (by
default the crashed kernel's: that log holds the panic), and :func:`panic_summary` picks out
what a triage wants: the panic / Oops / BUG / WARNING lines, the taint flags, the call trace,
the last lines before the panic, ``CRASHTIME`` and the uptime at the last record.

Virtual reads go through the kernel's own page tables as its VMCOREINFO describes them
(:class:`~vmci.kernel.vmem.KernelMemory`), so each kernel's log is read with its own
``KERNELOFFSET`` and ``phys_base`` whatever the vCPUs were running.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vmci.analysis.result import PanicSummary
from vmci.core.dump import Dump
from vmci.errors import NotFoundError, UsageError, VmciError
from vmci.kernel.printk import PrintkLog, PrintkRecord, get_printk_records
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.kernel.vmem import KernelMemory

__all__ = [
    "KERNEL_CHOICES",
    "TAINT_FLAGS",
    "KernelLog",
    "PanicSummary",
    "RunningKernel",
    "kernels_in_dump",
    "panic_summary",
    "read_kernel_log",
]

#: ``--kernel`` values besides a note's physical address.
KERNEL_CHOICES = ("auto", "crashed", "capture", "chosen")


@dataclass(frozen=True)
class RunningKernel:
    """One kernel whose VMCOREINFO the dump holds."""

    role: str
    """``crashed`` (its text has ``CRASHTIME``), ``capture`` (another kernel beside a crashed
    one: the kdump capture kernel) or ``running`` (the only kernel, no crash recorded)."""
    source: str
    """The discovery strategy that found its text first (``elf-note``, ``memory-scan``, ...)."""
    paddr: int | None
    """Physical address of its note in guest RAM, when known."""
    osrelease: str | None
    kerneloffset: int | None
    phys_base: int | None
    crashtime: int | None
    """``CRASHTIME`` (seconds since the epoch) when the kernel crashed into kexec."""
    chosen: bool
    """The text discovery chose for ``analyze`` (the dump's own note, usually)."""
    text: VmcoreInfo = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "source": self.source, "paddr": self.paddr, "osrelease": self.osrelease,
                "kerneloffset": self.kerneloffset, "phys_base": self.phys_base, "crashtime": self.crashtime,
                "chosen": self.chosen}


@dataclass(frozen=True)
class KernelLog:
    """The log :func:`read_kernel_log` read, and from which kernel."""

    log: PrintkLog
    kernel: RunningKernel
    kernels: tuple[RunningKernel, ...]
    """Every kernel found (more than one while a kdump capture kernel runs)."""


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except (VmciError, ValueError):
        return None


def _identity(text: VmcoreInfo) -> tuple[Any, ...]:
    pb = _safe(lambda: text.phys_base)
    return (_safe(lambda: text.osrelease), _safe(lambda: text.kerneloffset),
            None if pb is None else pb.value, _safe(lambda: text.crashtime))


def kernels_in_dump(dump: Dump, *, addr_blob: bytes | None = None, fw_cfg_record: bytes | None = None,
                    scan: bool = True) -> list[RunningKernel]:
    """Every distinct kernel (release, KERNELOFFSET, phys_base, CRASHTIME) whose valid VMCOREINFO
    text the strategies find, the chosen one first.  ``scan`` adds the memory scan, which is what
    finds a second kernel's note.  Raises :class:`~vmci.errors.NotFoundError` when none is found."""
    from vmci.discover import NAMES
    from vmci.discover.run import find_vmcoreinfo

    wanted = [s for s in NAMES if scan or s != "memory-scan"]
    if addr_blob is None:
        wanted = [s for s in wanted if s != "address-blob"]
    if fw_cfg_record is None:
        wanted = [s for s in wanted if s != "fw-cfg-record"]
    disc = find_vmcoreinfo(dump, addr_blob=addr_blob, fw_cfg_record=fw_cfg_record, strategies=wanted)
    seen: dict[tuple[Any, ...], RunningKernel] = {}
    ordered = sorted(disc.candidates, key=lambda c: c is not disc.chosen)  # the chosen text first
    for cand in ordered:
        if not cand.valid or cand.text is None:
            continue
        key = _identity(cand.text)
        if key in seen:
            continue
        osrelease, offset, pb, crashtime = key
        seen[key] = RunningKernel("running", cand.source, cand.paddr, osrelease, offset, pb, crashtime,
                                  cand is disc.chosen, cand.text)
    kernels = list(seen.values())
    if not kernels:
        raise NotFoundError(f"no VMCOREINFO in {dump.path}: {disc.reason or 'no strategy found a text'}")
    crashed = [k for k in kernels if k.crashtime is not None]
    out = []
    for k in kernels:
        role = "crashed" if k.crashtime is not None else ("capture" if crashed else "running")
        out.append(RunningKernel(role, k.source, k.paddr, k.osrelease, k.kerneloffset, k.phys_base,
                                 k.crashtime, k.chosen, k.text))
    return out


def _pick(kernels: Sequence[RunningKernel], which: str | int) -> RunningKernel:
    if isinstance(which, int):
        for k in kernels:
            if k.paddr == which:
                return k
        raise NotFoundError(f"no VMCOREINFO note at {which:#x} (found: "
                            + ", ".join(f"{k.role} @{k.paddr:#x}" for k in kernels if k.paddr is not None)
                            + ")")
    if which == "auto":
        return next((k for k in kernels if k.role == "crashed"), kernels[0])
    if which == "chosen":
        return next((k for k in kernels if k.chosen), kernels[0])
    if which not in ("crashed", "capture"):
        raise UsageError(f"--kernel is one of {', '.join(KERNEL_CHOICES)} or a note address, not {which!r}")
    for k in kernels:
        if k.role == which:
            return k
    roles = ", ".join(k.role for k in kernels)
    raise NotFoundError(f"no {which} kernel in this dump (kernels found: {roles})")


def read_kernel_log(dump: Dump, *, kernel: str | int = "auto", since_clear: bool = False,
                    addr_blob: bytes | None = None, fw_cfg_record: bytes | None = None,
                    scan: bool = True) -> KernelLog:
    """The kernel log of ``dump``, read through the chosen kernel's own page tables.

    ``kernel``: ``auto`` (the crashed kernel when one is recorded, else the text discovery
    chose), ``crashed``, ``capture``, ``chosen``, or the physical address of a VMCOREINFO note.
    ``scan=False`` skips the memory scan unless nothing else finds a text (faster; it may miss
    a second kernel).
    """
    try:
        kernels = kernels_in_dump(dump, addr_blob=addr_blob, fw_cfg_record=fw_cfg_record, scan=scan)
    except NotFoundError:
        if scan:
            raise
        kernels = kernels_in_dump(dump, addr_blob=addr_blob, fw_cfg_record=fw_cfg_record, scan=True)
    k = _pick(kernels, kernel)
    kmem = KernelMemory.from_dump(dump, k.text)
    return KernelLog(get_printk_records(kmem, since_clear=since_clear), k, tuple(kernels))


# -- the panic ---------------------------------------------------------------------------------

#: ``print_tainted()``'s letters (kernel/panic.c ``taint_flags``): the letter shown when the flag is
#: set, and what it means.  ``G`` in the first position means "no proprietary module" (not a flag).
TAINT_FLAGS: dict[str, str] = {
    "P": "proprietary module loaded",
    "F": "module force-loaded",
    "S": "kernel running on an out-of-specification system",
    "R": "module force-unloaded",
    "M": "machine check exception",
    "B": "bad page referenced or unexpected page flags",
    "U": "taint requested by user space",
    "D": "kernel died recently (OOPS or BUG)",
    "A": "ACPI table overridden by the user",
    "W": "kernel issued a warning",
    "C": "staging driver loaded",
    "I": "working around a severe firmware bug",
    "O": "externally-built (out-of-tree) module loaded",
    "E": "unsigned module loaded",
    "L": "soft lockup occurred",
    "K": "kernel live-patched",
    "X": "auxiliary taint (distribution-defined)",
    "T": "kernel built with the struct randomization plugin",
    "N": "in-kernel test run",
}

_PANIC = re.compile(rb"Kernel panic - not syncing: ")  # matched at the start of a record
_EVENTS = re.compile(
    rb"(Kernel panic - not syncing: |BUG: |Oops: |general protection fault|kernel BUG at |"
    rb"WARNING: CPU: |Unable to handle kernel |watchdog: BUG: |Internal error: )"
)
_TAINT = re.compile(rb"\b(Not tainted|Tainted: ([A-Z ]+?))\s+\d+\.\d+")
_FRAME = re.compile(rb"^\s*(\? )?([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+")


def _line(rec: PrintkRecord) -> str:
    return rec.text.decode("utf-8", "backslashreplace")


def panic_summary(log: PrintkLog | Sequence[PrintkRecord], *, crashtime: int | None = None,
                  lines: int = 20) -> PanicSummary:
    """Pick the crash out of ``log`` (records oldest first)."""
    records = list(log.records if isinstance(log, PrintkLog) else log)
    events = [i for i, r in enumerate(records) if _EVENTS.match(r.text)]
    panics = [i for i in events if _PANIC.match(records[i].text)]
    end = panics[-1] + 1 if panics else len(records)
    taint = None
    flags: tuple[str, ...] = ()
    for r in records[events[0] if events else 0:]:
        m = _TAINT.search(r.text)
        if m:
            taint = "" if m.group(2) is None else m.group(2).decode().rstrip()
            flags = tuple(TAINT_FLAGS[c] for c in (taint or "") if c in TAINT_FLAGS)
            break
    frames: list[str] = []
    if events:
        in_trace = False
        for r in records[events[0]:]:
            if b"Call Trace:" in r.text:
                in_trace = True
                continue
            if in_trace:
                m = _FRAME.match(r.text)
                if m:
                    if not m.group(1):
                        frames.append(m.group(2).decode())
                elif frames and not r.text.strip().startswith(b"<"):
                    break
    uptime = next((r.ts_nsec / 1e9 for r in reversed(records) if r.ts_nsec is not None), None)
    event_lines = tuple(_line(records[i]).strip() for i in events)
    return PanicSummary(
        panic=_line(records[panics[-1]]).strip() if panics else None,
        events=event_lines,
        first_event=event_lines[0] if event_lines else None,
        taint=taint,
        taint_flags=flags,
        frames=tuple(frames),
        last_lines=tuple(_line(r) for r in records[max(0, end - lines):end]),
        crashtime=crashtime,
        uptime=uptime,
    )
