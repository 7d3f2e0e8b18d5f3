"""The kernel log of generated guests, read back from every dump format, against the producer's
own record of what the guest kernel logged (``truth["printk"]``), and the panic summary against the
panic the producer wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli, schema_errors

from vmci.analysis.kernel_log import TAINT_FLAGS, kernels_in_dump, panic_summary, read_kernel_log
from vmci.errors import NotFoundError
from vmci.formats import open_dump
from vmci.producer.printk import PANIC_CAUSES
from vmci.producer.scenario import Scenario, generate


def vmci(*args: object) -> subprocess.CompletedProcess[bytes]:
    return run_cli([str(a) for a in args])


def make(tmp_path: Path, fmt: str = "kdump", **keys: object) -> tuple[Path, dict]:
    scenario = Scenario(**{"seed": 7, "ram": "64M", "log": 150, "panic": True, **keys})  # type: ignore[arg-type]
    path = tmp_path / f"guest.{fmt}"
    generate(scenario, path, fmt)
    return path, json.loads(Path(str(path) + ".truth.json").read_text())


def as_written(truth: dict) -> list[tuple]:
    return [(r["seq"], r["ts_nsec"], r["text"], r["level"], r["facility"]) for r in truth["printk"]["records"]
            if not r["dataless"]]


def as_read(out: bytes) -> list[tuple]:
    recs = [json.loads(line) for line in out.splitlines()]
    return [(r["seq"], r["ts_nsec"], r["text"], r["level"], r["facility"]) for r in recs if not r["dataless"]]


@pytest.mark.parametrize("fmt", ["elf", "elf-paging", "kdump", "kdump-flat", "kexec"])
def test_dmesg_json_equals_what_the_guest_logged(tmp_path: Path, fmt: str) -> None:
    path, truth = make(tmp_path, fmt)
    p = vmci("dmesg", path, "--json")
    assert p.returncode == 0, p.stderr.decode()
    assert as_read(p.stdout) == as_written(truth)
    assert b"crashed kernel" in p.stderr


@pytest.mark.parametrize(("kernel", "variant"), [("4.9", "structured"), ("4.19", "structured"),
                                                 ("5.10", "lockless"), ("6.12", "lockless")])
def test_every_profile_layout(tmp_path: Path, kernel: str, variant: str) -> None:
    path, truth = make(tmp_path, kernel=kernel)
    assert truth["printk"]["variant"] == variant
    with open_dump(path) as d:
        log = read_kernel_log(d).log
    assert log.variant == variant
    written = [r["text"] for r in truth["printk"]["records"] if not r["dataless"]]
    assert [r.text.decode("utf-8", "backslashreplace") for r in log.records if not r.dataless] == written


def test_noteless_dump_finds_the_text_by_scanning(tmp_path: Path) -> None:
    path, truth = make(tmp_path, device="none", faults=["vmcoreinfo-lost"])
    p = vmci("dmesg", path, "--json")
    if truth["expected"]["memory-scan"]["found"]:
        assert p.returncode == 0, p.stderr.decode()
        assert as_read(p.stdout) == as_written(truth)
        assert b"memory-scan" in p.stderr
    else:  # the text is gone from RAM too: say so, exit 1
        assert p.returncode == 1 and b"no VMCOREINFO" in p.stderr


def test_no_vmcoreinfo_at_all_is_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "blank.raw"
    path.write_bytes(bytes(1 << 20))
    p = vmci("dmesg", path, "--format", "raw")
    assert p.returncode == 1 and p.stdout == b"" and b"no VMCOREINFO" in p.stderr


@pytest.mark.parametrize("fault", ["truncated", "half-written", "corrupt-id", "reused-descriptor", "wrap"])
def test_damaged_log_gives_what_survives(tmp_path: Path, fault: str) -> None:
    """The producer says which records its fault destroyed (``damaged``) and which remain: the
    reader returns exactly those, and warns when records were lost."""
    path, truth = make(tmp_path, log_faults=[fault])
    p = vmci("dmesg", path, "--json")
    assert p.returncode == 0, p.stderr.decode()
    assert as_read(p.stdout) == as_written(truth)
    assert (b"warning" in p.stderr) == bool(sum(truth["printk"]["damaged"].values())), p.stderr


@pytest.mark.parametrize("cause", PANIC_CAUSES)
def test_panic_summary_of_each_cause(tmp_path: Path, cause: str) -> None:
    path, truth = make(tmp_path, panic_cause=cause)
    written = [r["text"] for r in truth["printk"]["records"]]
    panic_line = next(t for t in written if t.startswith("Kernel panic - not syncing: "))
    with open_dump(path) as d:
        result = read_kernel_log(d)
    summary = panic_summary(result.log, crashtime=result.kernel.crashtime)
    assert summary.panic == panic_line
    assert summary.crashtime == truth["vmcoreinfo"]["crashtime"]
    assert summary.last_lines[-1] == panic_line
    assert summary.first_event is not None and summary.first_event in written
    frames = [t.split("+")[0].strip() for t in written if t.startswith(" ") and "+0x" in t]
    assert summary.frames and list(summary.frames) == frames[:len(summary.frames)]
    if cause == "soft-lockup":
        assert summary.taint is not None and summary.taint_flags == (TAINT_FLAGS["L"],)
    else:
        assert summary.taint == "" and summary.taint_flags == ()


def test_distinct_causes_give_distinct_panics(tmp_path: Path) -> None:
    panics = set()
    for cause in PANIC_CAUSES:
        (tmp_path / cause).mkdir()
        path, _ = make(tmp_path / cause, panic_cause=cause)
        with open_dump(path) as d:
            panics.add(panic_summary(read_kernel_log(d).log).panic)
    assert len(panics) == len(PANIC_CAUSES)


def test_kernel_choice_errors(tmp_path: Path) -> None:
    path, _ = make(tmp_path)
    with open_dump(path) as d:
        kernels = kernels_in_dump(d)
        assert [k.role for k in kernels] == ["crashed"]
        with pytest.raises(NotFoundError, match="no capture kernel"):
            read_kernel_log(d, kernel="capture")
        with pytest.raises(NotFoundError, match="no VMCOREINFO note at 0x1"):
            read_kernel_log(d, kernel=0x1)


def test_filters_and_tail(tmp_path: Path) -> None:
    path, truth = make(tmp_path)
    p = vmci("dmesg", path, "--json", "--level", "emerg,alert", "-n", "2")
    assert p.returncode == 0
    want = [r for r in as_written(truth) if r[3] in (0, 1)][-2:]
    assert as_read(p.stdout) == want
    assert vmci("dmesg", path, "--level", "loud").returncode == 2


def test_analyze_carries_the_panic_section(tmp_path: Path) -> None:
    from vmci.analysis.analyze import analyze

    path, truth = make(tmp_path, panic_cause="hung-task")
    written = [r["text"] for r in truth["printk"]["records"]]
    with open_dump(path) as d:
        out = analyze(d).to_dict()
    assert schema_errors(out) == []
    assert out["panic"]["panic"] == next(t for t in written if t.startswith("Kernel panic - not syncing: "))
    assert out["panic"]["crashtime"] == truth["vmcoreinfo"]["crashtime"]
    (tmp_path / "quiet").mkdir()
    quiet, _ = make(tmp_path / "quiet", panic=False, log=0)
    with open_dump(quiet) as d:
        assert "panic" not in analyze(d).to_dict()  # no log: the JSON is as it always was
