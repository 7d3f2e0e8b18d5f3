"""A fuzzing campaign over every target, with the figures the README reports.

    python fuzz/campaign.py [--seconds-per-target S] [--runs-per-target N] [--jobs J] [--out DIR]
                            [--targets elf,kdump,...]
    python fuzz/campaign.py --report --out DIR [--targets ...]   # the table of a (running) campaign

Each target runs under libFuzzer until it has executed ``N`` inputs or ``S`` seconds have passed,
starting from generated seeds (:mod:`seeds`) and keeping its corpus in ``DIR/corpus/<target>``.
A failing input (uncaught exception, a modified input file, an input over ``-timeout=5``
seconds, out of memory) stops libFuzzer: it is saved under ``DIR/artifacts/<target>/`` and the
target is restarted on its corpus until its budget is spent.  The figures (executions, edge
coverage and features, crashes, hangs, out-of-memory, modified inputs, wall time, executions per
second, peak RSS) are printed as a table and written to ``DIR/figures.json``; libFuzzer's output
goes to ``DIR/<target>.log`` as it runs.

``-max_len`` is the largest seed of the target (at least 4096): libFuzzer's own default when it
starts from the seeds, made explicit so that a corpus reused from another run cannot raise it.
Inputs larger than the seeds exercise nothing the seeds' structures do not, and cost time in
every walk, hash and write of an execution.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import TARGETS  # noqa: E402

HANG_SECONDS = 5
#: Written to a target's log after each libFuzzer process: its wall time and exit status.
WALL_MARK = "#campaign wall_seconds="


def run_target(target: str, out: Path, seconds: float, runs: int, seeds: Path) -> dict[str, object]:
    corpus = out / "corpus" / target
    artifacts = out / "artifacts" / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    log = out / f"{target}.log"
    # the target's own temporary directory (the libvirt reader decompresses streams there): files
    # left in it after the run are temporary files vmci failed to remove
    tmp = out / "tmp" / target
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp))
    max_len = max([4096] + [f.stat().st_size for f in (seeds / target).iterdir()])
    deadline = time.monotonic() + seconds
    done = 0
    with log.open("w") as lf:
        while done < runs and time.monotonic() < deadline - 1:
            left = max(1, int(deadline - time.monotonic()))
            cmd = [sys.executable, str(HERE / f"fuzz_{target}.py"), str(corpus), str(seeds / target),
                   f"-max_total_time={left}", f"-runs={runs - done}", f"-timeout={HANG_SECONDS}",
                   f"-max_len={max_len}", "-rss_limit_mb=3072", "-print_final_stats=1",
                   f"-artifact_prefix={artifacts}/"]
            lf.flush()
            at = lf.tell()
            t0 = time.monotonic()
            p = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env)
            lf.write(f"{WALL_MARK}{time.monotonic() - t0:.1f} exit={p.returncode}\n")
            lf.flush()
            with log.open(errors="replace") as rf:
                rf.seek(at)
                m = re.findall(r"stat::number_of_executed_units:\s*(\d+)", rf.read())
            done += int(m[-1]) if m else 0
            if p.returncode != 0 and not m:  # it died before fuzzing (bad setup): stop this target
                break
    return figures(out, target)


def figures(out: Path, target: str) -> dict[str, object]:
    """A target's figures from its log and artifacts (also for a campaign run by an older script,
    whose log has no wall-time lines: then the wall time is libFuzzer's own ``Done ... in S``)."""
    text = (out / f"{target}.log").read_text(errors="replace")
    names = [a.name for a in (out / "artifacts" / target).iterdir()]

    def ints(pattern: str) -> list[int]:
        return [int(x) for x in re.findall(pattern, text)]

    walls = [float(x) for x in re.findall(re.escape(WALL_MARK) + r"([\d.]+)", text)]
    wall = sum(walls) if walls else float(sum(ints(r"Done \d+ runs in (\d+) second")))
    cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
    executions = sum(ints(r"stat::number_of_executed_units:\s*(\d+)"))
    return {
        "target": target, "executions": executions,
        "cov": max((int(c) for c, _ in cov), default=0), "ft": max((int(f) for _, f in cov), default=0),
        "crashes": sum(n.startswith("crash-") for n in names),
        "hangs": sum(n.startswith(("timeout-", "slow-unit-")) for n in names),
        "ooms": sum(n.startswith("oom-") for n in names),
        "modified_inputs": text.count("the input file was modified"),
        "restarts": len(re.findall(r"exit=[1-9]", text)),
        "slowest_input_seconds": max(ints(r"stat::slowest_unit_time_sec:\s*(\d+)"), default=0),
        "peak_rss_mb": max(ints(r"stat::peak_rss_mb:\s*(\d+)"), default=0),
        "wall_seconds": round(wall), "exec_per_second": round(executions / max(wall, 1.0)),
        "corpus": len(list((out / "corpus" / target).iterdir())),
        "leftover_temporary_files": len(list((out / "tmp" / target).iterdir()))
        if (out / "tmp" / target).is_dir() else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds-per-target", type=float, default=600)
    ap.add_argument("--runs-per-target", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("fuzz-campaign"))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--report", action="store_true",
                    help="only print the figures of the targets' logs in --out")
    a = ap.parse_args()
    targets = [t for t in a.targets.split(",") if t]
    if a.report:
        print(table([figures(a.out, t) for t in targets if (a.out / f"{t}.log").is_file()]))
        return
    a.out.mkdir(parents=True, exist_ok=True)
    seeds = a.out / "seeds"
    if not seeds.is_dir():
        from seeds import make_seeds

        make_seeds(seeds)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        results = list(pool.map(lambda t: run_target(t, a.out, a.seconds_per_target, a.runs_per_target,
                                                     seeds), targets))
    (a.out / "figures.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"campaign of {time.monotonic() - start:.0f} s, budget {a.runs_per_target} runs or "
          f"{a.seconds_per_target:.0f} s per target, hang = over {HANG_SECONDS} s per input")
    print(table(results))


def table(results: list[dict[str, object]]) -> str:
    """The README's table of a campaign's figures."""
    rows = ["| target | executions | edges (cov) | features (ft) | crashes | hangs | OOM | modified inputs "
            "| slowest input | wall time | exec/s | peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        slowest = r["slowest_input_seconds"] or "< 1"  # libFuzzer counts whole seconds
        rows.append(f"| {r['target']} | {r['executions']:,} | {r['cov']} | {r['ft']} | {r['crashes']} | "
                    f"{r['hangs']} | {r['ooms']} | {r['modified_inputs']} | {slowest} s "
                    f"| {r['wall_seconds']} s | {r['exec_per_second']} | {r['peak_rss_mb']} MB |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
