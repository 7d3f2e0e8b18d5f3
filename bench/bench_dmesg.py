"""Whole-process ``vmci dmesg`` on the real-QEMU tier's 256 MiB dumps, next to ``vmci vmcoreinfo``
on the same file and ``makedumpfile --dump-dmesg`` on a kexec-style rewrite of the same memory
(not a test; run it by hand after the real tier filled a cache directory).

    VMCI_REALWORLD_DIR=/some/dir pytest -m realworld tests/realworld/test_dmesg_real.py
    python3 bench/bench_dmesg.py /some/dir

Best of 5 wall-clock runs each, from the page cache.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "realworld"))

RUNS = 5


def best(cmd: list[str]) -> float:
    out = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    from realworld_helpers import kexec_rewrite

    from vmci.formats import open_dump
    from vmci.kernel.vmcoreinfo import VmcoreInfo

    root = Path(sys.argv[1])
    vmci = [sys.executable, "-c", "import sys; sys.argv[0]='vmci'; from vmci.cli import main; main()"]
    tool = shutil.which("makedumpfile")
    print(f"{'dump':40} {'dmesg':>8} {'vmcoreinfo':>11} {'makedumpfile':>13}")
    for scenario in ("panic", "panic_without_device", "kdump_capture"):
        for name in ("dump.elf", "dump.kdump-zlib", "migration.bin"):
            path = root / scenario / name
            if not path.is_file():
                continue
            dmesg = best([*vmci, "dmesg", str(path)])
            info = best([*vmci, "vmcoreinfo", str(path)])
            mdf = ""
            if tool and name == "dump.elf" and scenario == "panic":
                with tempfile.TemporaryDirectory() as tmp, open_dump(path) as d:
                    note = (root / scenario / "vmcoreinfo-note.bin").read_bytes()
                    descsz = int.from_bytes(note[4:8], "little")
                    vmcore = kexec_rewrite(d, VmcoreInfo.parse(note[24:24 + descsz]), Path(tmp) / "vmcore")
                    out = Path(tmp) / "dmesg.txt"
                    mdf = f"{best([tool, '--dump-dmesg', '-f', str(vmcore), str(out)]) * 1e3:10.0f} ms"
            print(f"{scenario + '/' + name:40} {dmesg * 1e3:5.0f} ms {info * 1e3:8.0f} ms {mdf:>13}")


if __name__ == "__main__":
    main()
