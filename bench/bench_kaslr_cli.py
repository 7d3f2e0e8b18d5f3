"""Time ``vmci kaslr DUMP --json`` as a whole process on a 256 MiB dump (not a test).

Generates a 256 MiB guest (KASLR, PTI, 2 vCPUs, kernel note wiped so only page tables remain) as
ELF and flattened kdump, then runs the real console script (not a pyenv shim) several times.
Real-QEMU dumps under $VMCI_REALWORLD_DIR/without_device are timed too when present.

Run: python3 bench/bench_kaslr_cli.py [--repeat N] [--vmci PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmci.producer.scenario import Scenario, build, write_dump


def default_vmci() -> str:
    real = Path(sys.executable).with_name("vmci")  # the interpreter's own script, not the shim
    return str(real) if real.is_file() else (shutil.which("vmci") or "vmci")


def time_cli(vmci: str, dump: Path, repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([vmci, "kaslr", str(dump), "--json"], check=True, stdout=subprocess.DEVNULL)
        runs.append(time.perf_counter() - t0)
    return min(runs), statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--vmci", default=default_vmci())
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        g = build(Scenario(seed=7, ram="256M", device="none", pti=True, cpus=2))
        g.mem.write(g.placed.note_paddr, bytes(g.placed.note_size))
        g.mem.write(g.placed.data_paddr, bytes(len(g.placed.text)))
        dumps = []
        for fmt in ("elf", "kdump-flat"):
            p = Path(tmp) / f"guest.{fmt}"
            with p.open("wb") as f:
                write_dump(g, f, fmt)
            dumps.append(p)
        real = Path(os.environ.get("VMCI_REALWORLD_DIR", "/nonexistent")) / "without_device"
        dumps += [p for p in (real / "dump.elf", real / "dump.kdump-zlib") if p.is_file()]
        t0 = time.perf_counter()
        subprocess.run([args.vmci, "--help"], check=True, stdout=subprocess.DEVNULL)
        print(f"{args.vmci} --help: {time.perf_counter() - t0:.3f} s")
        for p in dumps:
            best, median = time_cli(args.vmci, p, args.repeat)
            print(f"vmci kaslr {p.name:18s} {p.stat().st_size / (1 << 20):6.1f} MiB file: "
                  f"best {best:.3f} s, median {median:.3f} s ({args.repeat} runs; target <= 0.15 s)")


if __name__ == "__main__":
    main()
