"""Fleet triage throughput: dumps per second for ``vmci triage`` with ``--jobs 1``, ``--jobs 2``
and ``--dask local``, next to one ``vmci analyze --json`` process per dump (the start-up cost a
fleet run saves).  Not a test; run it by hand:

    python3 bench/bench_triage.py [count] [workdir] [--real DIR ...]

``count`` small generated dumps (16 MiB guests, kdump-compressed, seeds and devices varied) are
made once in ``workdir``; ``--real DIR`` adds a timing over the dumps in DIR (e.g. the real-QEMU
tier's 256 MiB ELF/kdump/migration files).  The one-process-per-dump figure is measured on the
first ``ANALYZE_SAMPLE`` dumps and reported per dump.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmci.producer.scenario import Scenario, generate

ANALYZE_SAMPLE = 50
DEVICES = ("rfc", "upstream", "none")


def make(count: int, workdir: Path) -> Path:
    d = workdir / "dumps"
    if d.exists() and len(list(d.glob("*.kdump"))) == count:
        return d
    d.mkdir(parents=True, exist_ok=True)
    side = workdir / "truth"
    side.mkdir(exist_ok=True)
    for i in range(count):
        out = d / f"guest-{i:04}.kdump"
        generate(Scenario.from_dict({"seed": 1000 + i, "ram": "16M", "device": DEVICES[i % 3]}), out, "kdump")
        for p in d.glob(f"{out.name}.*"):
            p.rename(side / p.name)
    return d


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.decode()[-500:]}")
    return time.perf_counter() - t


def triage_rate(paths: list[str], *args: str) -> tuple[float, float]:
    secs = timed([sys.executable, "-m", "vmci.cli", "triage", "-q", "-o", os.devnull, *args, *paths])
    return secs, len(paths) / secs


def main() -> None:
    argv = sys.argv[1:]
    real: list[str] = []
    while "--real" in argv:
        i = argv.index("--real")
        real.append(argv[i + 1])
        del argv[i: i + 2]
    count = int(argv[0]) if argv else 200
    workdir = Path(argv[1]) if len(argv) > 1 else Path(tempfile.gettempdir()) / "vmci-bench-triage"
    t = time.perf_counter()
    d = make(count, workdir)
    print(f"{count} dumps in {d} (made in {time.perf_counter() - t:.1f} s), {os.cpu_count()} CPU(s)")
    paths = sorted(str(p) for p in d.glob("*.kdump"))
    rows = []
    for label, args in (("--jobs 1", ["--jobs", "1"]), ("--jobs 2", ["--jobs", "2"]),
                        ("--dask local (2 workers)", ["--dask", "local", "--jobs", "2"])):
        secs, rate = triage_rate(paths, *args)
        rows.append((f"vmci triage {label}", secs, rate))
    sample = paths[:ANALYZE_SAMPLE]
    t = time.perf_counter()
    for p in sample:
        timed([sys.executable, "-m", "vmci.cli", "analyze", "--json", p])
    per = (time.perf_counter() - t) / len(sample)
    rows.append((f"vmci analyze, one process per dump ({len(sample)} timed)", per * len(paths), 1 / per))
    print(f"{'how':55} {'seconds':>8} {'dumps/s':>8}")
    for label, secs, rate in rows:
        print(f"{label:55} {secs:8.2f} {rate:8.1f}")
    for r in real:
        rp = sorted(str(p) for p in Path(r).iterdir() if p.is_file())
        for label, args in (("--jobs 1", ["--jobs", "1"]), ("--jobs 2", ["--jobs", "2"])):
            secs, rate = triage_rate(rp, *args)
            print(f"{r} ({len(rp)} files) {label}: {secs:.2f} s, {rate:.2f} files/s")


if __name__ == "__main__":
    main()
