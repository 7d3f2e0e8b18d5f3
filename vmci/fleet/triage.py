"""The per-dump task of fleet triage: :func:`triage` opens one dump, analyses it and returns a
flat :class:`~vmci.fleet.record.TriageRecord`.

It never raises: a :class:`~vmci.errors.VmciError` becomes ``error_class`` plus the error's own
``exit_code``; an operating-system error exit code 5; anything else (a bug) ``exit_code``
:data:`~vmci.fleet.record.EXIT_INTERNAL` with the exception's class name and message.  The dump is
opened as a context manager, so no mmap or file descriptor outlives the call.  Both the function
and its options are module-level and picklable, so local process pools and Dask workers (which
import the installed package) can run them; :func:`triage_task` is the form sent to workers: it
takes the path as the worker sees it and returns a plain dict.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmci.core.dump import Dump
from vmci.errors import VmciError
from vmci.fleet.gaps import memory_gaps
from vmci.fleet.record import EXIT_INTERNAL, TriageRecord, fingerprint

__all__ = ["TriageOptions", "triage", "triage_task"]

#: At most this many reader warnings go into a record.
MAX_WARNINGS = 20


@dataclass(frozen=True)
class TriageOptions:
    """How to read each dump.  ``format``/``raw_base`` as for ``vmci analyze``; ``vmgenid`` looks
    for the VM Generation ID (a signature scan of RAM when the F-segment has no RSDP);
    ``log_lines`` is how many kernel log lines ``last_lines`` keeps."""

    format: str = "auto"
    raw_base: int = 0
    vmgenid: bool = True
    log_lines: int = 10


def triage(path: str | os.PathLike[str], options: TriageOptions | None = None) -> TriageRecord:
    """Triage one dump; never raises (see the module docstring)."""
    from vmci import __version__

    opts = options or TriageOptions()
    start = time.perf_counter()
    base: dict[str, Any] = {"path": str(path), "vmci_version": __version__}
    try:
        st = os.stat(path)
        base.update(size=st.st_size, mtime=st.st_mtime)
    except OSError:
        pass  # open_dump below reports it as OSOpenError
    try:
        from vmci.analysis.analyze import analyze
        from vmci.formats import open_dump

        with open_dump(Path(path), format=opts.format, raw_base=opts.raw_base) as dump:
            analysis = analyze(dump, vmgenid=False)
            found = _record_from_analysis(dump, analysis.to_dict(), opts)
        base.update(found)
    except VmciError as e:
        base.update(error_class=type(e).__name__, error=str(e), exit_code=e.exit_code)
    except OSError as e:  # outside open_dump's own handling, e.g. a temporary file
        base.update(error_class=type(e).__name__, error=str(e), exit_code=5)
    except Exception as e:  # a bug in vmci: recorded, the run goes on
        base.update(error_class=type(e).__name__, error=f"{type(e).__name__}: {e}",
                    exit_code=EXIT_INTERNAL)
    base["elapsed"] = round(time.perf_counter() - start, 6)
    return TriageRecord(**base)


def triage_task(path: str, options: TriageOptions | None = None, display_path: str | None = None
                ) -> dict[str, Any]:
    """:func:`triage` as a worker runs it: ``path`` as the worker sees it, ``display_path`` the
    path to record (the caller's, before ``--path-map``).  Returns :meth:`TriageRecord.to_dict`."""
    record = triage(path, options)
    out = record.to_dict()
    if display_path is not None:
        out["path"] = display_path
    return out


def _record_from_analysis(dump: Dump, analysis: dict[str, Any], options: TriageOptions) -> dict[str, Any]:
    """The record's fields from an opened dump and ``analyze()``'s result.

    The one place that knows the analysis' shape.  Today ``analysis`` is the schema-1 dict of
    :func:`vmci.analysis.analyze.analyze` (``vmci analyze --json``); the panic fields wait for the
    kernel log.
    """
    vmci = analysis["vmcoreinfo"]
    kv = vmci["key_values"]
    kaslr = analysis["kaslr"] or {}
    checks = analysis["checks"]
    failing = tuple(c["name"] for c in checks if c["status"] == "FAIL")
    out: dict[str, Any] = {
        "format": dump.format,
        "format_description": dump.description,
        "arch": dump.arch,
        "release": kv.get("OSRELEASE"),
        "build_id": kv.get("BUILD-ID"),
        "vmcoreinfo_source": vmci["source"],
        "candidates": sum(1 for c in analysis["candidates"] if c["valid"]),
        "kerneloffset": kaslr.get("kerneloffset"),
        "phys_base": kaslr.get("phys_base"),
        "kaslr_method": kaslr.get("method"),
        "kaslr_verdict": kaslr.get("verdict"),
        "crash_time": kv.get("CRASHTIME"),
        "status": analysis["status"],
        "failing_checks": failing,
        "warning_checks": tuple(c["name"] for c in checks if c["status"] == "WARN"),
        "memory_size": dump.memory.size,
        "dump_warnings": tuple(dump.warnings[:MAX_WARNINGS]),
        "exit_code": 1 if not vmci["found"] or failing else 0,
    }
    gaps = memory_gaps(dump.memory)
    if gaps is not None:
        out.update(missing_bytes=gaps.missing, excluded_bytes=gaps.excluded, truncated=gaps.truncated)
    if options.vmgenid:
        from vmci.analysis.vmgenid import find_vmgenid_in_dump

        found = find_vmgenid_in_dump(dump)
        if found.found:
            out["vmgenid"] = found.to_dict()["guid"]
    # The kernel log: the crashed kernel's when the dump holds one (vmci.analysis.kernel_log)
    panic: str | None = None
    cause: str | None = None
    frames: tuple[str, ...] = ()
    if vmci["found"]:
        from vmci.analysis.kernel_log import panic_summary, read_kernel_log

        try:
            kernel_log = read_kernel_log(dump, scan=vmci["source"] == "memory-scan")
        except VmciError as e:
            out["dump_warnings"] = (*out["dump_warnings"], f"kernel log: {e}")[:MAX_WARNINGS]
        else:
            summary = panic_summary(kernel_log.log, crashtime=kernel_log.kernel.crashtime,
                                    lines=options.log_lines)
            panic = summary.panic or summary.first_event
            frames = summary.frames
            out.update(taint=summary.taint, last_lines=summary.last_lines, uptime=summary.uptime)
            cause = summary.first_event
    out["panic"] = panic
    out["fingerprint"] = fingerprint(cause if panic is not None else None, frames)
    return out
