"""Time ``vmci generate`` on a 16 GiB guest and report peak memory (not a test; run by hand).

    python3 bench/bench_generate.py [ram] [format ...]      # default: 16G kdump elf

The guest is built sparse: only the pages the actors write are stored (BIOS ROM, ACPI, page
tables, the kernel's buffers), so building costs little.  The kdump file still gets one page
descriptor per RAM page (QEMU's dump_level 1: zero pages share one stored zero page), so it is
dominated by descriptors; the ELF file is sparse (holes for zero blocks).  Peak RSS comes from
``resource.getrusage`` (Linux reports KiB).
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from vmci.producer.scenario import Scenario, build, write_dump


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ram = sys.argv[1] if len(sys.argv) > 1 else "16G"
    formats = sys.argv[2:] or ["kdump", "elf"]
    t0 = time.perf_counter()
    g = build(Scenario(seed=1, ram=ram, vmgenid=True))
    t1 = time.perf_counter()
    pages = sum(r.size for r in g.mem.ranges) // 4096
    stored = sum(1 for _ in g.mem.stored_pages())
    print(f"build {ram}: {t1 - t0:.2f} s, {pages} pages described, {stored} stored, "
          f"peak RSS {rss_mib():.0f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            path = Path(tmp) / f"bench.{fmt}"
            t2 = time.perf_counter()
            with path.open("wb") as f:
                write_dump(g, f, fmt)
            t3 = time.perf_counter()
            st = os.stat(path)
            print(f"{fmt:10} write {t3 - t2:7.2f} s  file {st.st_size / 2**20:9.1f} MiB  "
                  f"on disk {st.st_blocks * 512 / 2**20:8.1f} MiB  peak RSS {rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
