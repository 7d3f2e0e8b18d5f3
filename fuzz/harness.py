"""The parts every fuzz target shares: the seeds, the scratch file, and what a target does with
one input.

A target feeds the bytes libFuzzer hands it to vmci as a dump file (in ``/dev/shm`` when there is
one) and exercises what a user would: ``open_dump`` with the target's format, the memory walks
(ranges, runs, data chunks, pages, reads), the notes and CPU state, and for the ``analysis``
target ``analyze``, ``kaslr`` and the kernel log on top.  A :class:`~vmci.errors.VmciError` is the
expected answer to a bad file; any other exception is a defect (libFuzzer saves the input), so is
an input that takes longer than ``-timeout`` seconds, and so is a changed input file: the dump is
opened read-only, and :func:`run_one` asserts its bytes are the same afterwards.

Nothing here imports vmci at module level: a target imports the vmci modules it exercises inside
``atheris.instrument_imports()`` first, so that coverage is collected for them.

atheris 3.0.0 leaks one reference to the result of every comparison it traces when that result is
not a ``bool``: a numpy ``codes == DATA`` in instrumented code (the kdump page-descriptor walks)
left a 32 KiB boolean array behind per call, about 10 MB per execution of a 500 KB kdump, and
libFuzzer stopped the ``analysis`` target at its 3 GB RSS limit after about 1,200 executions
(uninstrumented, the same inputs stay at ~45 MiB).  :func:`plug_compare_leak` routes comparisons
whose operands are not ones atheris traces (int, str, bytes) past it, so nothing leaks and the
feedback is unchanged.
"""

from __future__ import annotations

import hashlib
import operator
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The targets: one per container format, and ``analysis`` (analyze, kaslr, dmesg) on top.
TARGETS = ("elf", "kdump", "flattened", "migration", "libvirt", "raw", "analysis")
#: Bytes of memory a walk may hand out per input (keeps one execution fast whatever is claimed).
WALK_BYTES = 2 << 20
#: The vmci modules each target runs, imported under instrumentation.
MODULES = {
    "elf": ["vmci.formats", "vmci.formats.elf.reader", "vmci.formats.notes", "vmci.core.memory"],
    "kdump": ["vmci.formats", "vmci.formats.kdump.reader", "vmci.formats.kdump.memory",
              "vmci.formats.kdump.header", "vmci.formats.kdump.bitmap", "vmci.core.codecs"],
    "flattened": ["vmci.formats", "vmci.formats.flattened", "vmci.formats.kdump.reader",
                  "vmci.formats.kdump.memory", "vmci.formats.elf.reader"],
    "migration": ["vmci.formats", "vmci.formats.migration.reader", "vmci.formats.migration.stream",
                  "vmci.formats.migration.ram", "vmci.formats.migration.memory",
                  "vmci.formats.migration.cpu"],
    "libvirt": ["vmci.formats", "vmci.formats.libvirt", "vmci.formats.migration.reader"],
    "raw": ["vmci.formats", "vmci.formats.raw"],
    "analysis": ["vmci.formats", "vmci.formats.kdump.reader", "vmci.formats.elf.reader",
                 "vmci.formats.flattened", "vmci.analysis.analyze", "vmci.analysis.kaslr",
                 "vmci.analysis.vmgenid", "vmci.discover.run", "vmci.discover.memory_scan",
                 "vmci.discover.address_blob",
                 "vmci.discover.acpi", "vmci.firmware.acpi", "vmci.kernel.vmem", "vmci.kernel.printk",
                 "vmci.kernel.kaslr", "vmci.arch.x86_64.paging", "vmci.kernel.vmcoreinfo"],
}
#: The ``--format`` each target forces (``analysis`` detects, as a user's command does).
FORMAT = {"elf": "elf", "kdump": "kdump", "flattened": "flattened", "migration": "migration",
          "libvirt": "libvirt", "raw": "raw", "analysis": "auto"}


#: ``dis.cmp_op`` order: the operation index atheris passes to ``_trace_cmp``.
_COMPARE = (operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge)
#: The operand types whose comparisons atheris turns into libFuzzer feedback.
_TRACED = (int, str, bytes)


def plug_compare_leak(atheris: Any) -> None:
    """Route comparisons atheris cannot use past its leaking ``_trace_cmp`` (see the module doc).

    Instrumented bytecode looks ``atheris._trace_cmp`` up on the module at each comparison, so the
    replacement applies to code instrumented before this call; ``atheris.Fuzz`` rebinds
    ``_trace_cmp`` to its libFuzzer core's when it starts, so a target calls this at every input
    (a no-op once plugged)."""
    native = atheris._trace_cmp
    if getattr(native, "vmci_plugged", False):
        return

    def trace_cmp(left: Any, right: Any, op: int, counter: int, is_const: bool) -> Any:
        if isinstance(left, _TRACED) and isinstance(right, _TRACED):
            return native(left, right, op, counter, is_const)
        return _COMPARE[op](left, right)

    trace_cmp.vmci_plugged = True  # type: ignore[attr-defined]
    atheris._trace_cmp = trace_cmp


def scratch_path(target: str) -> Path:
    """Where this process writes its inputs: one file per process in ``/dev/shm`` (or the temporary
    directory), removed after each input, so an ended run leaves nothing behind."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"vmci-fuzz-{target}-{os.getpid()}.dump"


def exercise_dump(dump: Any) -> None:
    """What a user's commands do with an open dump, each walk bounded by :data:`WALK_BYTES`."""
    mem = dump.memory
    ranges = list(mem.ranges)[:4096]
    _ = mem.size, dump.notes, dump.cpus, dump.header, dump.warnings
    for r in ranges[:64]:
        mem.read(r.start, min(r.size, 4096), zero_fill=True)
        mem.read(max(r.end - 64, r.start), min(r.size, 64), zero_fill=True)
        mem.readable(r.start, min(r.size, 1 << 20))
    for i, _run in enumerate(mem.runs()):
        if i > 10000:
            break
    for budget_walk in (mem.data_chunks, mem.chunks, mem.pages):
        seen = 0
        for _addr, buf in budget_walk():
            seen += len(buf)
            if seen > WALK_BYTES:
                break


def exercise_analysis(dump: Any) -> None:
    """``analyze`` (every strategy, the checks, vmgenid), ``kaslr`` and ``dmesg`` on a dump."""
    from vmci.analysis.analyze import analyze
    from vmci.analysis.kaslr import kaslr_for_dump
    from vmci.errors import VmciError
    from vmci.kernel.printk import get_printk_records
    from vmci.kernel.vmcoreinfo import VmcoreInfo
    from vmci.kernel.vmem import KernelMemory

    result = analyze(dump).to_dict()
    kaslr_for_dump(dump)
    text = result["vmcoreinfo"]["text"]
    try:
        kmem = KernelMemory.from_dump(dump, VmcoreInfo.parse(text.encode()) if text else None)
        get_printk_records(kmem, max_descriptors=256)
    except VmciError:
        pass


def run_one(data: bytes, target: str, path: Path) -> None:
    """One input: write it, open and exercise it, check it was not modified."""
    from vmci.errors import VmciError
    from vmci.formats import open_dump

    path.write_bytes(data)
    digest = hashlib.sha256(data).digest()
    try:
        try:
            with open_dump(path, format=FORMAT[target]) as dump:
                exercise_dump(dump)
                if target == "analysis":
                    exercise_analysis(dump)
        except VmciError:
            pass
        assert hashlib.sha256(path.read_bytes()).digest() == digest, "the input file was modified"
    finally:
        path.unlink(missing_ok=True)


def make_target(target: str) -> Callable[[bytes], None]:
    path = scratch_path(target)
    return lambda data: run_one(data, target, path)
