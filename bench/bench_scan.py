"""Time the memory scan in-process: over a 256 MiB in-memory image, and over real dumps (not a
test; run it by hand).

    python3 bench/bench_scan.py [size_mib] [--dump FILE ...] [--runs N]

The image is one ``bytes`` object wrapped in a tiny PhysicalMemory that hands out views, as
an mmap'd dump reader does.  One page in 16 holds random bytes (real RAM is not all zeros)
and the kernel's VMCOREINFO note sits page-aligned near the end.

``--dump`` (default: the real-QEMU tier's 256 MiB ELFs, ``$VMCI_REALWORLD_DIR/without_device/dump.elf``
and ``with_device/dump.elf``, when present) times ``scan()`` on each opened dump, from the page
cache, in every mode: ``aligned`` (byte 12 of every page), ``auto`` (what ``analyze`` runs: stops
once its note cannot be outranked), ``all`` (exhaustive: every byte searched, every copy
validated, with the vectorised search) and ``all/re`` (the same by regular expression: the search
``auto`` makes on a dump without a page-aligned note until numpy is loaded or 1 GiB was searched).
Throughput is the dump's RAM size over the scan's time, best and median of ``--runs``.  Target
(issue 13): >= 2 GB/s on the real 256 MiB ELF.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("size_mib", type=int, nargs="?", default=256)
    root = Path(os.environ.get("VMCI_REALWORLD_DIR", "/nonexistent"))
    real_elfs = [root / "without_device" / "dump.elf", root / "with_device" / "dump.elf"]
    ap.add_argument("--dump", type=Path, nargs="*", default=[p for p in real_elfs if p.is_file()])
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    size = a.size_mib * MiB
    mem = BytesMemory(image(size))
    for mode in ("aligned", "auto", "full"):
        best = min(_timed(mem, mode) for _ in range(3))
        f = scan(mem, mode=mode, verify_uts=False)  # type: ignore[arg-type]
        where = f"{f.chosen.paddr:#x}" if f.chosen and f.chosen.paddr is not None else "-"
        print(f"{mode:8s} {size // MiB} MiB: {best * 1000:7.1f} ms  ({size / best / 1e9:6.1f} GB/s) "
              f"candidates={len(f.candidates)} chosen={where}")
    real(a.dump, a.runs)


def real(paths: list[Path], runs: int) -> None:
    from vmci.discover import memory_scan
    from vmci.formats import open_dump

    vectorised = memory_scan.use_vectorised_search

    def never(searched: int, exhaustive: bool) -> bool:
        return False

    for mode in ("aligned", "auto", "all/re", "all"):
        memory_scan.use_vectorised_search = never if mode == "all/re" else vectorised  # all/re: by re
        for path in paths:
            with open_dump(path) as d:
                mem = d.memory
                times = []
                for _ in range(runs):
                    t = time.perf_counter()
                    f = memory_scan.scan(mem, mode=mode.split("/")[0], byteorder=d.byte_order)  # type: ignore[arg-type]
                    times.append(time.perf_counter() - t)
                best, med = min(times), statistics.median(times)
                where = f"{f.chosen.paddr:#x}" if f.chosen and f.chosen.paddr is not None else "-"
                print(f"{mode:9s} {path.parent.name}/{path.name}: best {best * 1000:6.1f} ms "
                      f"({mem.size / best / 1e9:5.2f} GB/s)  median {med * 1000:6.1f} ms "
                      f"({mem.size / med / 1e9:5.2f} GB/s)  candidates={len(f.candidates)} chosen={where}  "
                      f"load {os.getloadavg()[0]:.2f}")
    memory_scan.use_vectorised_search = vectorised


def _timed(mem: PhysicalMemory, mode: str) -> float:
    t = time.perf_counter()
    scan(mem, mode=mode, verify_uts=False)  # type: ignore[arg-type]
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
