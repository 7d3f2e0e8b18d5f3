"""A fuzzing campaign over every target, with the figures the README reports.

    python fuzz/campaign.py [--seconds-per-target S] [--runs-per-target N] [--jobs J] [--out DIR]
                            [--targets elf,kdump,...]

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


def run_target(target: str, out: Path, seconds: float, runs: int, seeds: Path) -> dict[str, object]:
    corpus = out / "corpus" / target
    artifacts = out / "artifacts" / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    log = out / f"{target}.log"
    figures: dict[str, object] = {"target": target, "executions": 0, "cov": 0, "ft": 0, "crashes": 0,
                                  "hangs": 0, "ooms": 0, "modified_inputs": 0, "restarts": 0,
                                  "peak_rss_mb": 0}
    max_len = max([4096] + [f.stat().st_size for f in (seeds / target).iterdir()])
    start = time.monotonic()
    deadline = start + seconds
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
            p = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=os.environ)
            lf.flush()
            with log.open(errors="replace") as rf:
                rf.seek(at)
                text = rf.read()
            m = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
            done += int(m[-1]) if m else 0
            cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
            if cov:
                figures["cov"], figures["ft"] = max(int(cov[-1][0]), int(figures["cov"])), \
                    max(int(cov[-1][1]), int(figures["ft"]))  # type: ignore[call-overload]
            rss = re.findall(r"stat::peak_rss_mb:\s*(\d+)", text)
            if rss:
                figures["peak_rss_mb"] = max(int(rss[-1]), int(figures["peak_rss_mb"]))  # type: ignore[call-overload]
            if "the input file was modified" in text:
                figures["modified_inputs"] = int(figures["modified_inputs"]) + 1  # type: ignore[call-overload]
            if p.returncode != 0:
                figures["restarts"] = int(figures["restarts"]) + 1  # type: ignore[call-overload]
                if not m:  # no stats: it died before fuzzing (bad setup): stop this target
                    figures["error"] = text[-2000:]
                    break
    names = [a.name for a in artifacts.iterdir()]
    figures["crashes"] = sum(n.startswith("crash-") for n in names)
    figures["hangs"] = sum(n.startswith(("timeout-", "slow-unit-")) for n in names)
    figures["ooms"] = sum(n.startswith("oom-") for n in names)
    figures["executions"] = done
    figures["wall_seconds"] = round(time.monotonic() - start)
    figures["exec_per_second"] = round(done / max(1.0, time.monotonic() - start))
    figures["corpus"] = len(list(corpus.iterdir()))
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds-per-target", type=float, default=600)
    ap.add_argument("--runs-per-target", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("fuzz-campaign"))
    ap.add_argument("--targets", default=",".join(TARGETS))
    a = ap.parse_args()
    targets = [t for t in a.targets.split(",") if t]
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
            "| wall time | exec/s | peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['target']} | {r['executions']:,} | {r['cov']} | {r['ft']} | {r['crashes']} | "
                    f"{r['hangs']} | {r['ooms']} | {r['modified_inputs']} | {r.get('wall_seconds', '?')} s "
                    f"| {r.get('exec_per_second', '?')} | {r.get('peak_rss_mb', '?')} MB |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
