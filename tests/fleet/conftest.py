"""A fleet of generated dumps with the producer's truth kept apart, and helpers to run the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vmci.producer.scenario import Scenario, generate

ROOT = Path(__file__).resolve().parents[2]

#: (file name, producer format, scenario keys, compression): every container the producer writes,
#: with and without a vmcoreinfo device, KASLR on and off, a stale second note, a lost note.
GOOD = [
    ("rfc.elf", "elf", {"seed": 11, "device": "rfc"}, "zlib"),
    ("upstream-paging.elf", "elf-paging", {"seed": 12, "device": "upstream"}, "zlib"),
    ("noteless-lzo.kdump", "kdump", {"seed": 13, "device": "none"}, "lzo"),
    ("ovmf-vmgenid.flat", "kdump-flat", {"seed": 14, "device": "rfc", "vmgenid": True, "firmware": "ovmf"},
     "zlib"),
    ("kexec.vmcore", "kexec", {"seed": 15, "device": "none", "ram": "48M"}, "zlib"),
    ("nokaslr-noteless.elf", "elf", {"seed": 16, "device": "none", "kaslr": False, "ram": "32M"}, "zlib"),
    ("stale-note.kdump", "kdump", {"seed": 17, "device": "rfc", "faults": ["stale-note"], "ram": "32M"},
     "zstd"),
    ("lost-note.kdump", "kdump", {"seed": 18, "device": "none", "faults": ["vmcoreinfo-lost"]}, "snappy"),
]

#: Producer format -> the container vmci names.
CONTAINER = {"elf": "elf", "elf-paging": "elf", "kexec": "elf", "kdump": "kdump",
             "kdump-flat": "kdump-flattened"}


@dataclass
class Fleet:
    dumps: Path  # only dumps (good and broken) and one text file
    truth: dict[str, dict[str, Any]]  # file name -> the producer's truth sidecar
    broken: dict[str, dict[str, Any]]  # file name -> what the test did to it
    originals: Path  # untouched copies of the dumps the broken ones were cut from


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    base = tmp_path_factory.mktemp("fleet")
    dumps, truth_dir, originals = base / "dumps", base / "truth", base / "originals"
    for d in (dumps, truth_dir, originals):
        d.mkdir()
    truth: dict[str, dict[str, Any]] = {}
    for name, fmt, keys, compression in GOOD:
        t = generate(Scenario.from_dict({"ram": "16M", **keys}), dumps / name, fmt, compression=compression)
        truth[name] = t.data
    # sidecars (truth, saved blobs) leave the directory: it holds what a fleet's dump store holds
    for p in list(dumps.iterdir()):
        if p.name not in truth:
            p.rename(truth_dir / p.name)
    elf = (dumps / "rfc.elf").read_bytes()
    kd = (dumps / "noteless-lzo.kdump").read_bytes()
    shutil.copy(dumps / "rfc.elf", originals / "rfc.elf")
    shutil.copy(dumps / "noteless-lzo.kdump", originals / "noteless-lzo.kdump")
    broken: dict[str, dict[str, Any]] = {
        "cut.elf": {"from": "rfc.elf", "cut": len(elf) // 2},
        "cut.kdump": {"from": "noteless-lzo.kdump", "cut": len(kd) - 6000},
        "bad-header.kdump": {"from": "noteless-lzo.kdump", "error_class": "FormatError"},
        "README.txt": {"error_class": "FormatError"},
        "empty.bin": {"error_class": "FormatError"},
    }
    (dumps / "cut.elf").write_bytes(elf[: broken["cut.elf"]["cut"]])
    (dumps / "cut.kdump").write_bytes(kd[: broken["cut.kdump"]["cut"]])
    bad = bytearray(kd)
    bad[100:140] = b"\xff" * 40  # inside disk_dump_header: the utsname strings and block_size
    (dumps / "bad-header.kdump").write_bytes(bytes(bad))
    (dumps / "README.txt").write_text("Dumps collected from the fleet.\n")
    (dumps / "empty.bin").write_bytes(b"")
    return Fleet(dumps, truth, broken, originals)


def vmci_env() -> dict[str, str]:
    """The environment for vmci subprocesses: this checkout first on the path."""
    path = os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}


def run_vmci(args: list[str], *, timeout: float = 120, cwd: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmci.cli", *args], capture_output=True, text=True,
                          env=vmci_env(), timeout=timeout, cwd=cwd)


def records_of(text: str) -> dict[str, dict[str, Any]]:
    """JSON Lines -> {file name: record}."""
    out = {}
    for line in text.splitlines():
        rec = json.loads(line)
        out[Path(rec["path"]).name] = rec
    return out


#: Fields that change from one run to the next.
VOLATILE = ("elapsed",)


def stable(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in r.items() if f not in VOLATILE} for k, r in records.items()}
