"""A few reads that tell a kernel log certainly holds no record, before any reader is loaded.

``vmci analyze`` looks for a panic in every dump whose VMCOREINFO it finds; most dumps of a
kernel that has not booted far (and the generated test dumps) have no log, and reading that
from ``SYMBOL(prb)`` takes two reads, far less than loading the readers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmci.errors import VmciError

if TYPE_CHECKING:
    from vmci.kernel.printk.records import KernelReader

__all__ = ["certainly_empty"]


def certainly_empty(kmem: KernelReader) -> bool:
    """True when :func:`~vmci.kernel.printk.get_printk_records` (``ring="active"``) would find no
    record: ``SYMBOL(prb)`` is present (so the lockless layout, probed first, applies), the
    pointer reads as NULL, and nothing is mapped at virtual address 0, where the reader would
    then look for the ring.  False means "read it" (it may still be empty)."""
    prb = kmem.symbol("prb")
    if prb is None:
        return False
    try:
        active = int.from_bytes(kmem.read(prb, kmem.pointer_size), kmem.byteorder)  # type: ignore[arg-type]
    except VmciError:
        return False  # the reader falls back to printk_rb_static
    if active:
        return False
    try:
        kmem.read(0, 1)
    except VmciError:
        return True
    return False
