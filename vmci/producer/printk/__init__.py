"""The guest kernel's log, written into guest RAM the way printk writes it, and its truth.

The emulated kernel keeps the log in the layout of its version (:func:`target_for` picks it from
the :class:`~vmci.producer.linux.KernelLayout` profile), placed at the addresses the VMCOREINFO
publishes:

* **lockless** (5.10+): a ``printk_ringbuffer`` at ``SYMBOL(printk_rb_static)``, optionally a
  bigger ``printk_rb_dynamic`` after ``setup_log_buf()`` (then ``prb`` points at it).  Writing
  follows ``kernel/printk/printk_ringbuffer.c``: ``desc_reserve()`` recycles the oldest
  descriptor when the ring is full (pushing the data tail past its block), ``data_alloc()``
  makes the descriptors of overwritten data blocks reusable and wraps blocks that would
  straddle the end of the data array to index 0 (with the id word at both places); records
  are finalized when they end in a newline or when the next one is reserved; ``seq`` follows
  the descriptor index (``prb_reserve()``), ids and lpos start at ``DESC0_ID``/``BLK0_LPOS`` so
  that they overflow early, as the kernel arranges.
* **structured** (3.5-5.9): ``log_store()``: records padded to ``LOG_ALIGN``, the oldest
  dropped until there is room for the record plus an empty header, a zeroed header
  (``len == 0``) where a record does not fit before the end of the buffer.
* **plain** (before 3.5): ``emit_log_char()`` into the character ring, each line prefixed
  ``<level>`` and ``[%5lu.%06lu] `` as ``vprintk()`` did with ``CONFIG_PRINTK_TIME``.

The truth (:class:`PrintkTruth`) is the producer's own bookkeeping: which records it wrote,
which it overwrote, which a fault destroyed -- never what a reader reads back.

Faults (:data:`FAULTS`) damage the log while it is written (a writer stopped mid-record) or
after (a damaged id or len, pages missing from the dump); each says what a careful reader must
report, and the truth counts the records each one cost.
"""

from __future__ import annotations

from vmci.layouts.printk import CALLER_CPU  # noqa: F401  (the module's namespace before it was split)
from vmci.producer.config import PANIC_CAUSES
from vmci.producer.linux import KernelProfile  # noqa: F401
from vmci.producer.printk.content import boot_log, panic_log
from vmci.producer.printk.records import FAULTS, LogRecord, PrintkTruth
from vmci.producer.printk.target import PrintkTarget, consistent_values, target_for, vmcoreinfo_lines
from vmci.producer.printk.write import write_printk_log

__all__ = (
    "FAULTS",
    "PANIC_CAUSES",
    "LogRecord",
    "PrintkTarget",
    "PrintkTruth",
    "boot_log",
    "consistent_values",
    "panic_log",
    "target_for",
    "vmcoreinfo_lines",
    "write_printk_log",
)
