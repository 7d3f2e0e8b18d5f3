"""Scale: whole-process ``vmci analyze`` / ``vmci info`` on generated sparse guests of growing RAM, in
kdump (raw), flattened kdump and ELF with holes; wall time and peak RSS per size and format (not a
test; run it by hand).

    python3 bench/bench_scale.py [--sizes 256M 4G 16G 64G] [--formats kdump kdump-flat elf]
                                 [--runs 5] [--workdir DIR] [--keep]

For every size and format two guests are written by ``vmci generate`` (default scenario, seed 1,
RFC vmcoreinfo device):

* note-less: ``--fault vmcoreinfo-lost`` zeroes the kernel's note and text pages, so neither the
  dump's notes nor the kdump header nor the device's page give a text and ``analyze`` ends in the
  memory scan's exhaustive search (the worst case: no early stop, every stored byte searched);
* with a note: the same guest without the fault (QEMU's VMCOREINFO note in the dump).

Timed, each in its own process (``python -c 'from vmci.cli import main; main()'``, the console
script without a shim), ``--runs`` times: ``analyze --json`` on the note-less dump, ``info --json``
and ``analyze --json`` on the dump with a note.  Wall time is best and median of the runs; peak RSS
is the child's ``ru_maxrss`` from ``os.wait4`` (the largest of the runs).  Guests are generated in
their own processes too, so no child inherits a large parent.

Targets (issue 13): the 16 GiB note-less kdump within 3x the 256 MiB time; peak RSS flat up to
64 GiB in every format; ``info``/``analyze`` with a note independent of RAM size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
MAIN = "import sys; sys.argv[0] = 'vmci'; from vmci.cli import main; main()"
#: analyze exits 1 when no text was found (the note-less guests): that is the expected answer.
OK_STATUS = (0, 1)


def vmci(*args: str) -> list[str]:
    return [sys.executable, "-c", MAIN, *args]


@dataclass
class Timing:
    best: float
    median: float
    rss_kib: int


def run_once(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of one child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in OK_STATUS:
        raise SystemExit(f"{' '.join(cmd)} exited {code}: {err[-2000:]}")
    return wall, usage.ru_maxrss


def timed(cmd: list[str], runs: int) -> Timing:
    results = [run_once(cmd) for _ in range(runs)]
    walls = [r[0] for r in results]
    return Timing(min(walls), statistics.median(walls), max(r[1] for r in results))


def generate(path: Path, fmt: str, ram: str, noteless: bool) -> float:
    args = ["-q", "generate", "--format", fmt, "--ram", ram, "--seed", "1", "-o", str(path)]
    if noteless:
        args += ["--fault", "vmcoreinfo-lost"]
    t = time.perf_counter()
    subprocess.run(vmci(*args), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def size_of(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size / MiB:,.0f} MiB ({st.st_blocks * 512 / MiB:,.0f} on disk)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["256M", "4G", "16G", "64G"])
    ap.add_argument("--formats", nargs="+", default=["kdump", "kdump-flat", "elf"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated dumps in --workdir")
    a = ap.parse_args()
    rows: list[tuple[str, str, str, Timing]] = []
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        work = Path(a.workdir) if a.keep and a.workdir else Path(tmp)
        for fmt in a.formats:
            for ram in a.sizes:
                bare, note = work / f"bare-{ram}.{fmt}", work / f"note-{ram}.{fmt}"
                for path, noteless in ((bare, True), (note, False)):
                    if not path.exists():
                        secs = generate(path, fmt, ram, noteless)
                        print(f"generated {path.name}: {size_of(path)} in {secs:.1f} s", flush=True)
                for what, cmd in (("analyze, note-less", vmci("analyze", "--json", str(bare))),
                                  ("info, with a note", vmci("info", "--json", str(note))),
                                  ("analyze, with a note", vmci("analyze", "--json", str(note)))):
                    t = timed(cmd, a.runs)
                    rows.append((fmt, ram, what, t))
                    print(f"  {fmt:10} {ram:>5} {what:22} best {t.best:6.2f} s  median {t.median:6.2f} s  "
                          f"peak RSS {t.rss_kib / 1024:6.1f} MiB", flush=True)
                if not a.keep:
                    for p in work.glob(f"*-{ram}.{fmt}*"):
                        p.unlink()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print()
    print("| format | RAM | command | best s | median s | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for fmt, ram, what, t in rows:
        print(f"| {fmt} | {ram} | {what} | {t.best:.2f} | {t.median:.2f} | {t.rss_kib / 1024:.1f} |")
    by = {(fmt, ram, what): t for fmt, ram, what, t in rows}
    for fmt in a.formats:
        small, big = by.get((fmt, "256M", "analyze, note-less")), by.get((fmt, "16G", "analyze, note-less"))
        if small and big:
            print(f"{fmt}: note-less analyze 16 GiB / 256 MiB = {big.best / small.best:.2f}x (best), "
                  f"{big.median / small.median:.2f}x (median); target <= 3x")
        rss = [by[k].rss_kib for k in by if k[0] == fmt]
        print(f"{fmt}: peak RSS {min(rss) / 1024:.1f}..{max(rss) / 1024:.1f} MiB over every size and command")


if __name__ == "__main__":
    main()
