"""Format-layer benchmark: read throughput and peak RSS on a 256 MiB guest, ELF and kdump-zlib.

    python bench/bench_formats.py [--elf FILE --kdump FILE] [--size-mib 256]

Without files, a synthetic guest is written first (a third random pages, a third text-like,
a third zero, like a booted guest compresses).  Each measurement runs in its own process
so peak RSS is its own.  Targets (issue 2): ELF page iteration >= 2 GB/s from page cache;
kdump-zlib full read no slower than Debian's libkdumpfile on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VMCI_READ = r"""
import json, resource, sys, time
from vmci.formats import open_dump
t0 = time.perf_counter()
with open_dump(sys.argv[1]) as d:
    opened = time.perf_counter() - t0
    mode = sys.argv[2]
    t1 = time.perf_counter()
    n = 0
    if mode == "pages":
        for _, page in d.memory.pages():
            n += len(page)
            page[0]  # touch
    else:  # chunks + a search, what a scan does
        for _, buf in d.memory.chunks():
            bytes(buf).find(b"VMCOREINFO\x00")
            n += len(buf)
    dt = time.perf_counter() - t1
print(json.dumps({"open_s": opened, "read_s": dt, "bytes": n,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

LIBKDUMPFILE_READ = r"""
import json, resource, sys, time, kdumpfile
t0 = time.perf_counter()
k = kdumpfile.kdumpfile(sys.argv[1])
n = 0
for addr in range(0, int(sys.argv[2]), 4096):
    try:
        n += len(k.read(kdumpfile.KDUMP_MACHPHYSADDR, addr, 4096))
    except Exception:
        pass
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"read_s": dt, "bytes": n, "rss_mib": rss}))
"""


def synthetic(tmp: Path, size: int) -> tuple[Path, Path]:
    from vmci.core.memory import Range, SparseMemory
    from vmci.formats.elf import write_elf
    from vmci.formats.kdump import write_kdump
    from vmci.formats.notes import encode_notes

    mem = SparseMemory([Range(0, 0xA0000), Range(0x100000, size - 0x100000)])
    rnd = random.Random(0)
    words = [w.encode() for w in ("the", "kernel", "page", "table", "vmcoreinfo", "note", "task", "memory")]
    for pfn in range(0x100, size // 4096):
        kind = pfn % 3
        if kind == 0:
            mem.write(pfn * 4096, rnd.randbytes(4096))
        elif kind == 1:
            mem.write(pfn * 4096, b" ".join(rnd.choice(words) for _ in range(700))[:4096])
    notes = encode_notes([("CORE", 1, bytes(336)), ("VMCOREINFO", 0, b"OSRELEASE=6.1.0\nPAGESIZE=4096\n")])
    elf, kdump = tmp / "guest.elf", tmp / "guest.kdump"
    with elf.open("wb") as f:
        write_elf(f, mem, notes)
    with kdump.open("wb") as f:
        write_kdump(
            f,
            mem,
            notes,
            compression="zlib",
            utsname={"sysname": "Linux", "release": "6.1.0", "version": "#1", "machine": "x86_64"},
        )
    return elf, kdump


def run(code: str, *args: str, python: str = sys.executable) -> dict:
    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--elf")
    ap.add_argument("--kdump")
    ap.add_argument("--size-mib", type=int, default=256)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.elf and args.kdump:
            elf, kdump = Path(args.elf), Path(args.kdump)
        else:
            t = time.perf_counter()
            elf, kdump = synthetic(Path(tmp), args.size_mib << 20)
            print(f"wrote synthetic guest in {time.perf_counter() - t:.1f} s")
        for path in (elf, kdump):
            subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        for label, path, mode in (
            ("ELF pages()", elf, "pages"),
            ("ELF chunks()+find", elf, "chunks"),
            ("kdump-zlib pages()", kdump, "pages"),
        ):
            r = run(VMCI_READ, str(path), mode)
            gbs = r["bytes"] / r["read_s"] / 1e9
            print(
                f"vmci {label:20s} {r['bytes'] >> 20:5d} MiB in {r['read_s']:.3f} s = {gbs:6.2f} GB/s, "
                f"open {r['open_s'] * 1000:.1f} ms, peak RSS {r['rss_mib']:.0f} MiB  "
                f"({os.path.getsize(path) >> 20} MiB file)"
            )
        if Path("/usr/bin/python3").exists():
            try:
                r = run(LIBKDUMPFILE_READ, str(kdump), str(args.size_mib << 20), python="/usr/bin/python3")
                print(
                    f"libkdumpfile kdump-zlib read  {r['bytes'] >> 20:5d} MiB in {r['read_s']:.3f} s = "
                    f"{r['bytes'] / r['read_s'] / 1e9:6.2f} GB/s, peak RSS {r['rss_mib']:.0f} MiB"
                )
            except subprocess.CalledProcessError as e:
                print("libkdumpfile not available:", e.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
