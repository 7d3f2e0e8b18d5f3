"""The guest kernel's page allocator, as far as placement goes: random, aligned picks from the
RAM nobody else holds (firmware, low memory and earlier picks reserved)."""

from __future__ import annotations

import random

from vmci.core.memory import PAGE_SIZE, Range, subtract
from vmci.errors import UsageError

__all__ = ["PageAllocator"]


class PageAllocator:
    """Free guest RAM the kernel may use; random, aligned picks (the page allocator's effect)."""

    def __init__(self, free: list[Range], rng: random.Random) -> None:
        self.free = sorted(free)
        self.rng = rng

    def reserve(self, r: Range) -> None:
        self.free = subtract(self.free, [r])

    def claim(self, r: Range, what: str) -> None:
        """Reserve ``r``, which must be free (a pinned placement)."""
        if not any(f.start <= r.start and r.end <= f.end for f in self.free):
            raise UsageError(f"the {what} at {r} is not free guest RAM (firmware, low memory or outside RAM)")
        self.reserve(r)

    def take(self, size: int, align: int = PAGE_SIZE, *, what: str) -> int:
        """A random ``align``-aligned free stretch of ``size`` bytes, reserved."""
        slots = []
        for r in self.free:
            lo = -(-r.start // align) * align
            n = (r.end - size - lo) // align + 1 if r.end - size >= lo else 0
            if n > 0:
                slots.append((lo, n))
        total = sum(n for _, n in slots)
        if not total:
            raise UsageError(f"guest RAM too small for the {what} ({size:#x} bytes)")
        k = self.rng.randrange(total)
        for lo, n in slots:
            if k < n:
                addr = lo + k * align
                self.reserve(Range(addr, size))
                return addr
            k -= n
        raise AssertionError("unreachable")
