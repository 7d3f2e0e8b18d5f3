"""Whole-process `vmci analyze` on a generated 256 MiB ELF dump, with a note and without (scan),
next to `cat FILE > /dev/null` on the same file (not a test; run it by hand).

    python3 bench/bench_analyze.py [size_mib] [workdir]

Targets (issue 4): <= 120 ms whole process with a note; <= 100 ms discovery for the note-less
dump (volatility3 takes about 1 s).  One page in 16 holds random bytes; the kernel's note sits
page-aligned in the middle of RAM.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmci.core.memory import Range, SparseMemory
from vmci.formats import open_dump
from vmci.formats.elf import write_elf
from vmci.formats.notes import encode_notes
from vmci.producer.linux import KernelLayout, place_vmcoreinfo

MiB = 1 << 20
RUNS = 5


def make(size: int, workdir: Path) -> tuple[Path, Path]:
    rnd = random.Random(1)
    mem = SparseMemory([Range(0, size)])
    for off in range(0, size, 16 * 4096):
        mem.write(off, rnd.randbytes(4096))
    placed = place_vmcoreinfo(mem, KernelLayout(kaslr_offset=0x1000000, phys_base=0), size // 2,
                              size // 2 + 2 * 4096)
    paths = workdir / "note.elf", workdir / "bare.elf"
    for path, notes in zip(paths, ([("VMCOREINFO", 0, placed.text)], []), strict=True):
        with path.open("wb") as f:
            write_elf(f, mem, encode_notes(notes), sparse=False)
    return paths


def best(cmd: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t)
    return min(times)


def in_process(path: Path) -> float:
    from vmci.discover.run import find_vmcoreinfo

    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        with open_dump(path) as d:
            disc = find_vmcoreinfo(d)
            assert disc.found
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    size = int(sys.argv[1]) * MiB if len(sys.argv) > 1 else 256 * MiB
    workdir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="vmci-bench-"))
    note, bare = make(size, workdir)
    py = [sys.executable]
    print(f"{size // MiB} MiB dumps in {workdir}; best of {RUNS}")
    print(f"python3 -c pass                  {best([*py, '-c', 'pass']) * 1e3:7.1f} ms")
    print(f"python3 -c 'import vmci.cli'     {best([*py, '-c', 'import vmci.cli']) * 1e3:7.1f} ms")
    for label, path in (("with note", note), ("note-less", bare)):
        cat = best(["sh", "-c", f"cat {path} > /dev/null"])
        run = best([*py, "-m", "vmci.cli", "analyze", str(path), "--json"])
        disc = in_process(path)
        print(f"{label:10s} cat {cat * 1e3:7.1f} ms | vmci analyze (process) {run * 1e3:7.1f} ms | "
              f"open+discovery in process {disc * 1e3:7.1f} ms")
    if len(sys.argv) <= 2:
        for p in (note, bare):
            os.unlink(p)


if __name__ == "__main__":
    main()
