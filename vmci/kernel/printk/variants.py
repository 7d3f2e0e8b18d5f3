"""The registry of log layouts (:data:`VARIANTS`, probed in order by their VMCOREINFO keys) and
:func:`get_printk_records`, the one entry point that reads a log."""

from __future__ import annotations

from vmci.errors import NotFoundError, UsageError
from vmci.kernel.printk.lockless import read_lockless
from vmci.kernel.printk.plain import read_plain
from vmci.kernel.printk.records import (
    DEFAULT_MAX_DESCRIPTORS,
    KernelReader,
    LogVariant,
    PrintkLog,
    ReadOptions,
)
from vmci.kernel.printk.structured import read_structured


def _has(kmem: KernelReader, *names: str) -> bool:
    return all(kmem.symbol(n) is not None for n in names)


#: The log layouts, probed in order; the first whose keys are present is read.
VARIANTS: tuple[LogVariant, ...] = (
    LogVariant("lockless", "Linux 5.10+: printk_ringbuffer (SYMBOL(prb))",
               lambda k: _has(k, "prb") or _has(k, "printk_rb_static"), read_lockless),
    LogVariant("structured", "Linux 3.5-5.9: printk_log records (SYMBOL(log_first_idx))",
               lambda k: _has(k, "log_buf", "log_buf_len", "log_first_idx", "log_next_idx")
               and (k.size("printk_log") is not None or k.size("log") is not None), read_structured),
    LogVariant("plain", "before 3.5: a text ring (SYMBOL(log_end))",
               lambda k: _has(k, "log_buf", "log_end", "log_buf_len"), read_plain),
)


def variant_for(kmem: KernelReader) -> LogVariant:
    """The first of :data:`VARIANTS` whose VMCOREINFO keys are present."""
    for v in VARIANTS:
        if v.applies(kmem):
            return v
    raise NotFoundError("the VMCOREINFO has none of the kernel log keys (SYMBOL(prb), "
                        "SYMBOL(log_first_idx) with SIZE(printk_log), SYMBOL(log_end))")


def get_printk_records(kmem: KernelReader, *, since_clear: bool = False, ring: str = "active",
                       max_descriptors: int = DEFAULT_MAX_DESCRIPTORS) -> PrintkLog:
    """Read the kernel log.

    :param since_clear: only records since the last ``dmesg -C`` (makedumpfile's
        ``--partial-dmesg``).
    :param ring: lockless only: ``active`` (what ``prb`` points at, as makedumpfile reads),
        ``static`` (``printk_rb_static``, the boot ring) or ``both`` (records of the boot ring
        older than the active ring's oldest, then the active ring).
    :param max_descriptors: read at most this many of the newest descriptors.
    """
    if ring not in ("active", "static", "both"):
        raise UsageError(f"ring is active, static or both, not {ring!r}")
    if max_descriptors < 1:
        raise UsageError("max_descriptors must be positive")
    return variant_for(kmem).read(kmem, ReadOptions(since_clear, ring, max_descriptors))
