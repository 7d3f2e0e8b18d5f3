"""``vmci triage --dask`` on a real ``distributed`` cluster started here on loopback (a ``dask
scheduler`` and two ``dask worker`` processes), and on a ``LocalCluster``: the same records as the
local run, and no dump lost when a worker is killed mid-run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import Fleet, records_of, run_vmci, stable, vmci_env

#: Every wait here is bounded; the cluster is torn down whatever happens.
START_TIMEOUT = 40.0


@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    pytest.importorskip("distributed", reason="the dask extra: pip install 'vmci[dask]'")
    from distributed import Client

    env = {**vmci_env(), "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    info = tmp_path / "scheduler.json"
    log = (tmp_path / "cluster.log").open("wb")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(info)],
            env=env, stdout=log, stderr=log, start_new_session=True))
        deadline = time.monotonic() + START_TIMEOUT
        while not info.exists() or not info.read_text().strip().endswith("}"):
            assert time.monotonic() < deadline, "the scheduler did not start"
            assert procs[0].poll() is None, "the scheduler exited"
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for _ in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny",
                 "--no-dashboard", "--host", "127.0.0.1"],
                env=env, stdout=log, stderr=log, start_new_session=True))
        with Client(address, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
        yield Cluster(address, procs[0], procs[1:])
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()


@pytest.fixture(scope="module")
def local_records(fleet: Fleet) -> dict[str, dict[str, Any]]:
    p = run_vmci(["triage", str(fleet.dumps), "-j", "1"])
    assert p.returncode == 1
    return stable(records_of(p.stdout))


def test_real_cluster_gives_the_same_records(fleet: Fleet, cluster: Cluster,
                                             local_records: dict[str, dict[str, Any]]) -> None:
    p = run_vmci(["triage", str(fleet.dumps), "--dask", cluster.address], timeout=90)
    assert p.returncode == 1, p.stderr
    assert stable(records_of(p.stdout)) == local_records


def test_local_cluster_gives_the_same_records(fleet: Fleet, local_records: dict[str, dict[str, Any]]) -> None:
    pytest.importorskip("distributed", reason="the dask extra: pip install 'vmci[dask]'")
    p = run_vmci(["triage", str(fleet.dumps), "--dask", "local", "-j", "2"], timeout=90)
    assert p.returncode == 1, p.stderr
    assert stable(records_of(p.stdout)) == local_records


def test_killing_a_worker_loses_no_dump(fleet: Fleet, cluster: Cluster, tmp_path: Path) -> None:
    many = tmp_path / "many"
    many.mkdir()
    for i in range(40):  # a dump whose triage scans all its memory: ~0.1 s each
        os.link(fleet.dumps / "noteless-lzo.kdump", many / f"guest-{i:02}.kdump")
    os.link(fleet.dumps / "README.txt", many / "README.txt")
    cmd = [sys.executable, "-m", "vmci.cli", "triage", str(many), "--dask", cluster.address]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=vmci_env(), text=True)
    try:
        assert proc.stdout is not None
        first = [proc.stdout.readline() for _ in range(3)]  # the run is under way
        victim = cluster.workers[0]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        rest, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    recs = records_of("".join(first) + rest)
    assert sorted(recs) == sorted(p.name for p in many.iterdir()), err
    assert len(("".join(first) + rest).splitlines()) == 41  # each dump exactly once
    assert proc.returncode == 1  # README.txt is no dump
    readme = recs.pop("README.txt")
    assert readme["error_class"] == "FormatError" and readme["exit_code"] == 3
    bad = {k: r["error"] for k, r in recs.items() if r["error_class"] is not None}
    assert not bad, bad
    kaslr = fleet.truth["noteless-lzo.kdump"]["kernel"]["kaslr_offset"]
    assert {r["kerneloffset"] for r in recs.values()} == {kaslr}


def test_losing_every_worker_ends_the_run(fleet: Fleet, cluster: Cluster, tmp_path: Path) -> None:
    """With no worker left a scheduler keeps tasks pending for ever: after --worker-wait seconds
    the dumps not yet done are recorded as failed (each exactly once) and the run ends."""
    many = tmp_path / "many"
    many.mkdir()
    for i in range(40):
        os.link(fleet.dumps / "noteless-lzo.kdump", many / f"guest-{i:02}.kdump")
    cmd = [sys.executable, "-m", "vmci.cli", "triage", str(many), "--dask", cluster.address,
           "--worker-wait", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=vmci_env(), text=True)
    try:
        assert proc.stdout is not None
        first = [proc.stdout.readline() for _ in range(2)]  # the run is under way
        for worker in cluster.workers:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        started = time.monotonic()
        rest, err = proc.communicate(timeout=60)
        ended = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    lines = ("".join(first) + rest).splitlines()
    recs = records_of("".join(first) + rest)
    assert len(lines) == 40 and sorted(recs) == sorted(p.name for p in many.iterdir()), err
    lost = {k for k, r in recs.items() if r["error_class"] is not None}
    assert lost, "every dump finished before the workers were killed: the test proved nothing"
    assert {recs[k]["error_class"] for k in lost} <= {"NoWorkerError", "KilledWorker"}
    assert any(recs[k]["error_class"] == "NoWorkerError" for k in lost)
    assert proc.returncode == 1 and ended < 45
