"""Whole-process start-up of ``vmci analyze --json`` on a dump with a note: this tree against a
baseline tree (another checkout of vmci), CPU time (user + system) of the process, which a
loaded machine disturbs less than wall time (not a test; run it by hand).

    python3 bench/bench_startup.py BASELINE_TREE [DUMP] [--runs N] [--rounds R] [--out FILE]

Each tree runs from its own sources (``PYTHONPATH``) in a neutral working directory, with
``.pyc`` files enabled (``PYTHONDONTWRITEBYTECODE`` removed, one warm-up run writes them).  The
trees alternate for ``R`` rounds of ``N`` runs each; the figure is the best and the median over
all runs, and their difference.  Issue #14: not slower than the first wave (commit 339061a).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
MAIN = "import sys; sys.argv[0] = 'vmci'; from vmci.cli import main; main()"


def cpu_times(tree: Path, dump: Path, runs: int, cwd: str) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tree)
    cmd = [sys.executable, "-c", MAIN, "analyze", str(dump), "--json"]
    out = []
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline", type=Path, help="the tree to compare with (holds vmci/)")
    ap.add_argument("dump", type=Path, nargs="?", default=HERE / "testdata" / "upstream.kdump")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", type=Path, help="append the figure to this file")
    args = ap.parse_args()
    trees = {"baseline": args.baseline.resolve(), "this tree": HERE}
    times: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as cwd:
        for tree in trees.values():
            cpu_times(tree, args.dump.resolve(), 1, cwd)  # writes the .pyc files
        for _ in range(args.rounds):
            for name, tree in trees.items():
                times[name] += cpu_times(tree, args.dump.resolve(), args.runs, cwd)
    lines = [f"vmci analyze --json {args.dump.name}, whole process, CPU time, "
             f"{args.rounds * args.runs} runs each, alternating:"]
    best = {}
    for name, t in times.items():
        best[name] = min(t)
        lines.append(f"  {name:10s} {trees[name]}: best {min(t) * 1e3:6.1f} ms, "
                     f"median {statistics.median(t) * 1e3:6.1f} ms")
    lines.append(f"  difference of the best: {(best['this tree'] - best['baseline']) * 1e3:+.1f} ms")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
