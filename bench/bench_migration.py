"""Time opening a 256 MiB-guest QEMU migration stream and reading its VMCOREINFO note, as a whole
process (interpreter start, imports, index walk, note read) — not a test.

Run: python3 bench/bench_migration.py [--stream FILE] [--repeat N]

Without ``--stream`` a stream is generated: a 256 MiB q35 guest with every page filled (the worst
case: 65,536 PAGE records, 268 MB) and the upstream vmcoreinfo record.  A real stream, e.g. the
real-QEMU tier's ``$VMCI_REALWORLD_DIR/with_device/migration.bin``, can be given instead.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmci.core.memory import Range, SparseMemory
from vmci.formats import open_dump
from vmci.formats.migration.writer import VmcoreinfoRecord, standard_devices, write_migration

MIB = 1 << 20
NOTE_PADDR = 0x1300000
CHILD = """
import sys
from vmci.formats import open_dump
d = open_dump(sys.argv[1])
rec = d.facts["devices"]["vmcoreinfo"]
note = d.memory.read(rec["paddr"], rec["size"])
assert note[12:23] == b"VMCOREINFO\\0", note[:32]
"""


def generate(path: Path) -> None:
    mem = SparseMemory([Range(0, 256 * MIB)])
    filler = bytes(range(256)) * 16
    for pa in range(0, 256 * MIB, 4096):
        mem.write(pa, filler)
    text = b"OSRELEASE=6.1.0-bench\nPAGESIZE=4096\n"
    note = b"".join(
        [(11).to_bytes(4, "little"), len(text).to_bytes(4, "little"), bytes(4), b"VMCOREINFO\0\0", text]
    )
    mem.write(NOTE_PADDR, note.ljust(4132, b"\0"))
    devices = standard_devices(vmcoreinfo_record=VmcoreinfoRecord(0, 1, 4132, NOTE_PADDR))
    with path.open("wb") as f:
        write_migration(f, mem, devices=devices)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stream", type=Path, help="a migration stream (default: generate one)")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    tmp = None
    path = args.stream
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="vmci-bench-")
        path = Path(tmp.name) / "guest.qevm"
        t0 = time.perf_counter()
        generate(path)
        print(f"generated {path.stat().st_size / MIB:.0f} MiB stream in {time.perf_counter() - t0:.1f} s")
    try:
        with path.open("rb") as f:  # warm the page cache, as a second look at a file would
            while f.read(64 * MIB):
                pass
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", CHILD, str(path)], check=True)
            times.append(time.perf_counter() - t0)
        base = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            base.append(time.perf_counter() - t0)
        opens = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            with open_dump(path) as d:
                rec = d.facts["devices"]["vmcoreinfo"]
                d.memory.read(rec["paddr"], rec["size"])
            opens.append(time.perf_counter() - t0)
        size = path.stat().st_size / MIB
        print(f"stream: {path} ({size:.0f} MiB, {d.facts['ram_records']} RAM records)")
        print(
            f"whole process (open_dump + note read): median {statistics.median(times):.3f} s, "
            f"min {min(times):.3f} s over {args.repeat} runs (target <= 0.3 s)"
        )
        print(f"  of which a bare interpreter start: median {statistics.median(base):.3f} s")
        print(f"in-process open_dump + note read: median {statistics.median(opens) * 1e3:.1f} ms")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
