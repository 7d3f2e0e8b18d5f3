"""``vmci convert`` next to makedumpfile: whole-process time, output size and peak RSS (not a test; run
it by hand).

    python3 bench/bench_convert.py [--elf FILE] [--big-gib 1 16] [--workdir DIR] [--runs 3]

1. The real 256 MiB QEMU ELF (default: ``$VMCI_REALWORLD_DIR/with_device/dump.elf``) converted to
   kdump-zlib at dump level 31 (``vmci convert DUMP -o OUT --level 31``), next to
   ``makedumpfile -c -d 31`` on the same memory rewritten as a kexec-style ELF (makedumpfile
   refuses QEMU 7.2's own ELF); the rewrite is not counted.  Goal (issue 10): not slower.
2. Generated guests of ``--big-gib`` GiB (sparse: the producer's memory map, 2% of the free
   stretches given out) converted at levels 31 and 1: peak RSS should stay flat as they grow.

Each command runs in its own process; peak RSS is that process's ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20


def run(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of one child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status:
        raise SystemExit(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return wall, usage.ru_maxrss


def best(cmd: list[str], runs: int, before: list[Path] = ()) -> tuple[float, int]:  # type: ignore[assignment]
    results = []
    for _ in range(runs):
        for p in before:
            p.unlink(missing_ok=True)
        results.append(run(cmd))
    return min(r[0] for r in results), max(r[1] for r in results)


MAIN = "import sys; sys.argv[0] = 'vmci'; from vmci.cli import main; main()"


def vmci(*args: str) -> list[str]:
    return [sys.executable, "-c", MAIN, *args]


def real(elf: Path, work: Path, runs: int) -> None:
    out, vmcore, mdf_out = work / "vmci.kdump", work / "vmcore", work / "mdf.kdump"
    subprocess.run(vmci("convert", str(elf), "-o", str(vmcore), "--to", "kexec-elf", "--level", "0"),
                   check=True, stdout=subprocess.DEVNULL)
    t_vmci, rss_vmci = best(vmci("-q", "convert", str(elf), "-o", str(out), "--level", "31"), runs)
    t_mdf, rss_mdf = best(["makedumpfile", "-c", "-d", "31", str(vmcore), str(mdf_out)], runs, [mdf_out])
    print(f"real 256 MiB guest, {elf}")
    print(f"  {'':24} {'seconds':>8} {'peak RSS':>10} {'output':>12}")
    print(f"  {'vmci convert -d 31':24} {t_vmci:8.2f} {rss_vmci / 1024:8.1f} MiB "
          f"{out.stat().st_size / MiB:8.2f} MiB")
    print(f"  {'makedumpfile -c -d 31':24} {t_mdf:8.2f} {rss_mdf / 1024:8.1f} MiB "
          f"{mdf_out.stat().st_size / MiB:8.2f} MiB")
    t_import, _ = best(vmci("--version"), runs)
    print(f"  (vmci start-up alone: {t_import:.2f} s)")


GENERATE = r"""
import sys
from pathlib import Path
from vmci.producer import mm
from vmci.producer.qemu_dump import guest_note, qemu_notes, write_qemu_elf
from vmci.producer.scenario import Scenario, build

# a mostly idle guest: 98% of the free stretches stay free (the producer's default is half)
mm.DEFAULT_MIX.clear()
mm.DEFAULT_MIX.update({"free": 0.98, "cache": 0.006, "anon": 0.006, "slab": 0.004, "thp": 0.002,
                       "hugetlb": 0.001, "offline": 0.001})
g = build(Scenario(ram=int(sys.argv[1]) << 30, seed=3, mem_map=True))
with Path(sys.argv[2]).open("wb") as f:
    write_qemu_elf(f, g.mem, qemu_notes(g.cpus, guest_note(g.mem, g.vmcoreinfo_device)), qemu_version=(7, 1))
"""


def big(gib: int, work: Path, runs: int) -> None:
    """The generated guest is made in its own process: a child forked from a large parent would
    report the parent's RSS as its own peak."""
    path = work / f"guest-{gib}g.elf"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", GENERATE, str(gib), str(path)], check=True)
    used = os.stat(path).st_blocks * 512
    print(f"generated {gib} GiB guest in {time.perf_counter() - t:.1f} s: "
          f"{path.stat().st_size / MiB:.0f} MiB apparent, {used / MiB:.0f} MiB on disk")
    for level in (31, 1):
        out = work / f"big-{level}.kdump"
        secs, rss = best(vmci("-q", "convert", str(path), "-o", str(out), "--level", str(level)), runs)
        print(f"  vmci convert -d {level:<2} {secs:8.2f} s {rss / 1024:8.1f} MiB peak RSS "
              f"{out.stat().st_size / MiB:8.2f} MiB output")
        out.unlink()
    path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ.get("VMCI_REALWORLD_DIR", "")) / "with_device" / "dump.elf"
    ap.add_argument("--elf", type=Path, default=default)
    ap.add_argument("--big-gib", type=int, nargs="*", default=[1, 16],
                    help="generated guest sizes in GiB (RSS should not grow with them)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        work = Path(tmp)
        if a.elf.is_file():
            real(a.elf, work, a.runs)
        else:
            print(f"no real ELF at {a.elf} (set VMCI_REALWORLD_DIR or --elf): skipped")
        for gib in a.big_gib:
            big(gib, work, a.runs)


if __name__ == "__main__":
    main()
