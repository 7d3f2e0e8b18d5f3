"""Time the memory scan over a 256 MiB in-memory image (not a test; run it by hand).

    python3 bench/bench_scan.py [size_mib]

The image is one ``bytes`` object wrapped in a tiny PhysicalMemory that hands out views, as
an mmap'd dump reader does.  One page in 16 holds random bytes (real RAM is not all zeros)
and the kernel's VMCOREINFO note sits page-aligned near the end.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence

from vmci.core.memory import Extent, PhysicalMemory, Range
from vmci.discover.memory_scan import scan
from vmci.producer.linux import KernelLayout, note_buffer, vmcoreinfo_text

MiB = 1 << 20


class BytesMemory(PhysicalMemory):
    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def ranges(self) -> Sequence[Range]:
        return [Range(0, len(self.data))]

    def extent(self, paddr: int, limit: int) -> Extent:
        n = min(limit, len(self.data) - paddr)
        return Extent(memoryview(self.data)[paddr:paddr + n], n)


def image(size: int) -> bytes:
    rnd = random.Random(1)
    data = bytearray(size)
    for off in range(0, size, 16 * 4096):
        data[off:off + 4096] = rnd.randbytes(4096)
    layout = KernelLayout()
    text = vmcoreinfo_text(layout)
    note = note_buffer(text, layout.note_size)
    at = size - 64 * 4096
    data[at:at + len(note)] = note
    data[at + 2 * 4096:at + 2 * 4096 + len(text)] = text
    return bytes(data)


def main() -> None:
    size = int(sys.argv[1]) * MiB if len(sys.argv) > 1 else 256 * MiB
    mem = BytesMemory(image(size))
    for mode in ("aligned", "auto", "full"):
        best = min(_timed(mem, mode) for _ in range(3))
        f = scan(mem, mode=mode, verify_uts=False)  # type: ignore[arg-type]
        where = f"{f.chosen.paddr:#x}" if f.chosen and f.chosen.paddr is not None else "-"
        print(f"{mode:8s} {size // MiB} MiB: {best * 1000:7.1f} ms  ({size / best / 1e9:6.1f} GB/s) "
              f"candidates={len(f.candidates)} chosen={where}")


def _timed(mem: PhysicalMemory, mode: str) -> float:
    t = time.perf_counter()
    scan(mem, mode=mode, verify_uts=False)  # type: ignore[arg-type]
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
