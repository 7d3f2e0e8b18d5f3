"""The entry point: :func:`write_printk_log` writes a log in the target's layout, with faults."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vmci.core.memory import SparseMemory
from vmci.errors import UsageError
from vmci.layouts.printk import (
    PRB_AVGBITS,
)
from vmci.producer.linux import KernelLayout
from vmci.producer.printk.lockless import geometry, write_lockless
from vmci.producer.printk.plain import write_plain
from vmci.producer.printk.records import VARIANT_FAULTS, LogRecord, PrintkTruth
from vmci.producer.printk.structured import write_structured
from vmci.producer.printk.target import PrintkTarget, target_for, vmcoreinfo_lines


def write_printk_log(mem: SparseMemory, target: PrintkTarget | KernelLayout, records: Sequence[LogRecord], *,
                     alloc: Callable[..., int], faults: Sequence[str] = (), ring_bits: int | None = None,
                     dynamic_bits: int | None = None, dynamic_after: int = 0,
                     clear_after: int | None = None) -> PrintkTruth:
    """Log ``records`` into guest RAM as ``target``'s kernel does, then apply ``faults``.

    :param alloc: ``alloc(size, align, what=...) -> paddr`` gives free guest RAM for the
        buffers (``PageAllocator.take`` of the scenario builder); the kernel variables go to
        the image addresses of ``target.symbols``.
    :param ring_bits: ``CONFIG_LOG_BUF_SHIFT`` (the log's size is ``1 << ring_bits``); by default
        just big enough (fault ``wrap``: small enough to wrap a few times).
    :param dynamic_bits: lockless: after ``dynamic_after`` records, ``setup_log_buf()`` moves the
        log to a ``1 << dynamic_bits`` dynamic ring (``prb`` then points at it).
    :param clear_after: ``dmesg -C`` after that many records (``clear_seq``/``clear_idx``/``logged_chars``).
    """
    t = target_for(target) if isinstance(target, KernelLayout) else target
    fs = set(faults)
    known = VARIANT_FAULTS[t.variant] | {"wrap"}
    bad = sorted(fs - known)
    if bad:
        raise UsageError(f"fault {bad[0]!r} does not apply to the {t.variant} log "
                         f"(known: {', '.join(sorted(known))})")
    bits = geometry(records, ring_bits, t.pointer_size, "wrap" in fs)
    for b in (bits, dynamic_bits):
        if b is not None and not PRB_AVGBITS + 2 <= b <= 31:
            raise UsageError(f"ring size 2^{b} out of range (2^{PRB_AVGBITS + 2}..2^31)")
    if t.variant == "lockless":
        truth = write_lockless(mem, t, records, fs, alloc, bits, dynamic_bits, dynamic_after, clear_after)
    elif t.variant == "structured":
        truth = write_structured(mem, t, records, fs, alloc, bits, clear_after)
    else:
        truth = write_plain(mem, t, records, fs, alloc, bits, clear_after)
    truth.vmcoreinfo_lines = vmcoreinfo_lines(t)
    return truth
