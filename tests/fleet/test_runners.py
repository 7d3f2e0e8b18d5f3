"""Path expansion, --path-map, --resume, and a local pool that loses a worker."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from tests.fleet.conftest import Fleet, records_of, run_vmci
from vmci.errors import UsageError
from vmci.fleet.record import EXIT_INTERNAL
from vmci.fleet.runners import RunConfig, expand_paths, map_path, parse_path_map, plan, run


def test_expand_files_directories_globs(tmp_path: Path) -> None:
    (tmp_path / "a.kdump").write_bytes(b"x")
    (tmp_path / "b.elf").write_bytes(b"x")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "c.kdump").write_bytes(b"x")
    t = str(tmp_path)
    assert expand_paths([t]) == [f"{t}/a.kdump", f"{t}/b.elf"]
    assert expand_paths([t], recursive=True) == [f"{t}/a.kdump", f"{t}/b.elf", f"{t}/sub/c.kdump"]
    assert expand_paths([f"{t}/*.kdump"]) == [f"{t}/a.kdump"]
    assert expand_paths([f"{t}/**/*.kdump"], recursive=True) == [f"{t}/a.kdump", f"{t}/sub/c.kdump"]
    # duplicates once; a missing path is kept (its record says why)
    assert expand_paths([f"{t}/a.kdump", t, f"{t}/gone"]) == [f"{t}/a.kdump", f"{t}/b.elf", f"{t}/gone"]


def test_path_map() -> None:
    pm = parse_path_map(["/mnt/dumps/=/srv/nfs/dumps/", "/a=/b"])
    assert map_path("/mnt/dumps/x.kdump", pm) == "/srv/nfs/dumps/x.kdump"
    assert map_path("/a/y", pm) == "/b/y" and map_path("/c/z", pm) == "/c/z"
    with pytest.raises(UsageError):
        parse_path_map(["no-equals"])


def test_records_keep_the_callers_path(fleet: Fleet, tmp_path: Path) -> None:
    alias = tmp_path / "client-view"
    alias.mkdir()
    name = "rfc.elf"
    # the client names a path that does not exist for it; the workers see the real one
    cfg = RunConfig(jobs=1, path_map=((str(alias), str(fleet.dumps)),))
    [rec] = list(run([str(alias / name)], None, cfg))
    assert rec.path == str(alias / name) and not rec.failed and rec.release is not None


def test_resume_skips_what_is_recorded(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    first = sorted(str(p) for p in fleet.dumps.iterdir())[:4]
    p = run_vmci(["triage", "-j", "1", "-o", str(out), "--resume", str(out), *first])
    assert len(out.read_text().splitlines()) == 4, p.stderr
    # the whole directory now: only the rest is triaged, appended to the same file
    p = run_vmci(["triage", "-j", "2", "-o", str(out), "--resume", str(out), str(fleet.dumps)])
    assert p.returncode == 1
    assert "4 dump(s) already in" in p.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == len(list(fleet.dumps.iterdir()))
    assert len(records_of("\n".join(lines))) == len(lines)  # each dump once
    # a dump that changed since (other mtime) is triaged again
    st = Path(first[0]).stat()
    os.utime(first[0], ns=(1, 1))
    try:
        todo = plan([str(fleet.dumps)], resume=out).todo
    finally:
        os.utime(first[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert todo == [first[0]]
    # a half-written last line (a killed run) does not stop a resume
    with out.open("a") as f:
        f.write('{"path": "/x", "si')
    assert plan([str(fleet.dumps)], resume=out).todo == []


def test_a_lost_worker_is_retried_once_then_recorded(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dump that kills its worker process: the other dumps of that pool come back on the retry,
    the killer is recorded as a failure after its second try."""
    import vmci.fleet.triage as triage_mod

    real = triage_mod.triage

    def deadly(path: str, options: object = None) -> object:
        if str(path).endswith("README.txt"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, options)  # type: ignore[arg-type]

    # forked workers inherit the patch (forkserver ones would import vmci afresh)
    monkeypatch.setattr(triage_mod, "triage", deadly)
    monkeypatch.setattr("vmci.fleet.runners._mp_context", lambda: multiprocessing.get_context("fork"))
    paths = sorted(str(p) for p in fleet.dumps.iterdir())
    recs = {r.path: r for r in run(paths, None, RunConfig(jobs=2))}
    assert sorted(recs) == paths
    killer = recs[str(fleet.dumps / "README.txt")]
    assert killer.exit_code == EXIT_INTERNAL and killer.error_class == "BrokenProcessPool"
    assert not recs[str(fleet.dumps / "rfc.elf")].failed
