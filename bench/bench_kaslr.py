"""Time KASLR discovery from page tables over a generated 256 MiB x86_64 guest (not a test).

Run: python3 bench/bench_kaslr.py [--repeat N]
"""

from __future__ import annotations

import argparse
import time

from vmci.arch.x86_64.kaslr import kaslr_from_page_tables
from vmci.arch.x86_64.paging import walk
from vmci.core.memory import Range, SparseMemory
from vmci.producer.pagetables import build_kernel_page_tables

MIB = 1 << 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--vcpus", type=int, default=4)
    args = ap.parse_args()

    t0 = time.perf_counter()
    mem = SparseMemory([Range(0, 0x9FC00), Range(0x100000, 256 * MIB - 0x100000)])
    koff = 0x2C000000
    kt = build_kernel_page_tables(mem, Range(0x100000, 0x300000), kaslr_offset=koff,
                                  phys_base=0x2000000 - koff, pti=True, split_4k=2)
    procs = [kt.add_process() for _ in range(args.vcpus - 1)]
    cpus = [kt.cpu_state(0)] + [kt.cpu_state(i + 1, cr3=p.cr3_user, user=True) for i, p in enumerate(procs)]
    kt.flush()
    # fill every RAM page so the guest really holds 256 MiB
    filler = bytes(range(256)) * 16
    used = set(mem.stored_pages())  # page tables, IDT, GDTs: keep them
    for r in mem.ranges:
        for pa in range(-(-r.start // 4096) * 4096, r.end // 4096 * 4096, 4096):
            if pa // 4096 not in used:
                mem.write(pa, filler)
    build_s = time.perf_counter() - t0

    res = kaslr_from_page_tables(mem, cpus)
    assert (res.kerneloffset, res.phys_base) == (kt.kaslr_offset, kt.phys_base) and res.agree
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        kaslr_from_page_tables(mem, cpus)
    per = (time.perf_counter() - t0) / args.repeat

    t0 = time.perf_counter()
    n = sum(1 for _ in walk(mem, kt.pgd))
    walk_s = time.perf_counter() - t0

    print(f"guest: 256 MiB, {len(cpus)} vCPUs (PTI, {len(kt.builder.tables)} table pages), "
          f"built in {build_s:.2f} s")
    print(f"kaslr_from_page_tables: {per * 1e3:.3f} ms per call ({args.repeat} calls), "
          f"offset {res.kerneloffset:#x}, phys_base {res.phys_base:#x}")
    print(f"full walk of the kernel PGD: {n} leaf mappings in {walk_s * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
