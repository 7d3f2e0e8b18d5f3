"""``vmci triage`` over a directory of generated dumps: one correct record each, checked against the
producer's own truth (never vmci's reader), the broken ones carrying their error and exit code."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import jsonschema
from elftools.elf.elffile import ELFFile

from tests.fleet.conftest import CONTAINER, GOOD, Fleet, records_of, run_vmci, stable
from vmci.fleet.record import EXIT_INTERNAL, TriageRecord, json_schema
from vmci.fleet.triage import TriageOptions, triage, triage_task


def found_by(truth: dict[str, Any]) -> set[str]:
    return {name for name, e in truth["expected"].items() if e["found"]}


def check_good(rec: dict[str, Any], truth: dict[str, Any], path: Path) -> None:
    k = truth["kernel"]
    assert rec["error_class"] is None and rec["exit_code"] in (0, 1), rec
    assert rec["format"] == CONTAINER[truth["format"]]
    assert rec["arch"] == "x86_64"
    assert rec["size"] == path.stat().st_size and rec["mtime"] == path.stat().st_mtime
    # the KASLR values the producer placed the kernel at, note or no note (page tables)
    assert rec["kerneloffset"] == k["kaslr_offset"]
    assert rec["phys_base"] == k["phys_base"]
    sources = found_by(truth)
    if sources:
        assert rec["vmcoreinfo_source"] in sources
        assert rec["release"] == truth["vmcoreinfo"]["osrelease"] == k["osrelease"]
        assert rec["build_id"] == k["build_id"]
        assert rec["crash_time"] == truth["vmcoreinfo"]["crashtime"]
        assert rec["candidates"] >= 1
        assert rec["exit_code"] == (1 if rec["status"] == "FAIL" else 0)
    else:  # the text is gone: nothing to name the release by, and analyze says so
        assert rec["vmcoreinfo_source"] is None and rec["release"] is None and rec["candidates"] == 0
        assert rec["exit_code"] == 1 and "vmcoreinfo-found" in rec["failing_checks"]
        assert rec["kaslr_method"] == "page-tables"
    assert rec["vmgenid"] == (truth["vmgenid"]["guid"] if truth["vmgenid"] else None)
    assert rec["missing_bytes"] == 0 and rec["excluded_bytes"] == 0 and rec["truncated"] is False
    ram = sum(size for _, size in truth["ram"]["ranges"])
    if truth["format"] != "kexec":  # /proc/vmcore leaves page 0, 0xA0000-0xFFFFF and crashkernel out
        assert rec["memory_size"] in (ram, truth["ram"]["ram_size"])
    assert rec["panic"] is None and rec["fingerprint"] is None  # no kernel log in these guests


def elf_bytes_past(original: Path, cut: int) -> int:
    """Bytes of PT_LOAD data beyond ``cut``, by pyelftools (a peer reader) on the uncut file."""
    with original.open("rb") as f:
        segs = [s for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD"]
        return sum(max(0, s["p_offset"] + s["p_filesz"] - max(cut, s["p_offset"])) for s in segs)


def kdump_pages_past(original: Path, truth: dict[str, Any], cut: int) -> int:
    """Page descriptors (struct page_desc: offset, size, flags, page_flags; makedumpfile's
    diskdump_mod.h) whose data ends past ``cut``, at the offsets the producer wrote them."""
    data = original.read_bytes()
    d = truth["dump"]
    descs = struct.iter_unpack("<qIIQ", data[d["desc_offset"]: d["desc_offset"] + 24 * d["dumpable_pages"]])
    return sum(1 for off, size, _, _ in descs if off + size > cut)


def test_directory_gives_one_correct_record_per_dump(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "fleet.jsonl"
    p = run_vmci(["triage", str(fleet.dumps), "-o", str(out), "--jobs", "2", "--quiet"])
    assert p.returncode == 1, p.stderr  # some dumps cannot be read
    recs = records_of(out.read_text())
    assert sorted(recs) == sorted([*fleet.truth, *fleet.broken])
    schema = json_schema()
    for rec in recs.values():
        jsonschema.validate(rec, schema)
    for name, truth in fleet.truth.items():
        check_good(recs[name], truth, fleet.dumps / name)
    # truncated files: read as far as they go, the missing bytes counted by independent readers
    cut = recs["cut.elf"]
    assert cut["error_class"] is None and cut["truncated"] is True
    assert cut["missing_bytes"] == elf_bytes_past(fleet.originals / "rfc.elf", fleet.broken["cut.elf"]["cut"])
    assert cut["release"] == fleet.truth["rfc.elf"]["kernel"]["osrelease"]
    ck = recs["cut.kdump"]
    assert ck["truncated"] is True and ck["excluded_bytes"] == 0
    pages = kdump_pages_past(fleet.originals / "noteless-lzo.kdump", fleet.truth["noteless-lzo.kdump"],
                             fleet.broken["cut.kdump"]["cut"])
    assert pages > 0 and ck["missing_bytes"] == pages * 4096
    for name in ("bad-header.kdump", "README.txt", "empty.bin"):
        r = recs[name]
        assert r["error_class"] == fleet.broken[name]["error_class"] and r["exit_code"] == 3, r
        assert r["error"] and r["status"] is None and r["release"] is None
        assert r["size"] == (fleet.dumps / name).stat().st_size


def test_serial_and_pool_give_the_same_records(fleet: Fleet) -> None:
    one = run_vmci(["triage", str(fleet.dumps), "-j", "1"])
    two = run_vmci(["triage", str(fleet.dumps), "-j", "2"])
    assert one.returncode == two.returncode == 1
    assert stable(records_of(one.stdout)) == stable(records_of(two.stdout))
    assert len(one.stdout.splitlines()) == len(GOOD) + len(fleet.broken)


def test_all_read_exits_0_and_usage_exits_2(fleet: Fleet) -> None:
    good = [str(fleet.dumps / name) for name, *_ in GOOD if name != "lost-note.kdump"]
    p = run_vmci(["triage", "-j", "1", *good])
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == len(good)
    assert run_vmci(["triage", "--jobs", "0", *good]).returncode == 2
    assert run_vmci(["triage", "--path-map", "nothing", *good]).returncode == 2


def test_triage_never_raises(tmp_path: Path) -> None:
    rec = triage(tmp_path / "missing")
    assert rec.error_class == "OSOpenError" and rec.exit_code == 5 and rec.size is None
    rec = triage(tmp_path)  # a directory
    assert rec.failed and rec.exit_code == 2
    rec = triage(tmp_path, TriageOptions(format="no-such-format"))
    assert rec.error_class == "UsageError"


def test_unexpected_exception_is_recorded(fleet: Fleet, monkeypatch: Any) -> None:
    import vmci.analysis.analyze

    def boom(*a: Any, **k: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(vmci.analysis.analyze, "analyze", boom)
    rec = triage(fleet.dumps / "rfc.elf")
    assert rec.error_class == "ZeroDivisionError" and rec.exit_code == EXIT_INTERNAL
    assert "a bug" in (rec.error or "")


def test_no_mapping_outlives_the_call(fleet: Fleet) -> None:
    path = fleet.dumps / "rfc.elf"
    rec = triage(path)
    assert not rec.failed
    maps = Path("/proc/self/maps").read_text()
    assert str(path.resolve()) not in maps
    fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{fd}")]
    assert str(path.resolve()) not in fds


def test_task_and_record_pickle(fleet: Fleet) -> None:
    options = pickle.loads(pickle.dumps(TriageOptions()))
    task = pickle.loads(pickle.dumps(triage_task))
    out = task(str(fleet.dumps / "rfc.elf"), options, "/as/the/client/sees/it.elf")
    assert out["path"] == "/as/the/client/sees/it.elf"
    json.dumps(out)  # a plain, small dict
    rec = TriageRecord.from_dict(out)
    assert pickle.loads(pickle.dumps(rec)) == rec
