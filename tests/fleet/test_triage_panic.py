"""Triage reads the crash from the kernel log: the panic line the producer's guest logged, and a
fingerprint shared by equal causes (other seeds, KASLR offsets, PIDs) and not by distinct ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmci.fleet.triage import triage
from vmci.producer.printk import PANIC_CAUSES
from vmci.producer.scenario import Scenario, generate


def guest(tmp_path: Path, cause: str, seed: int) -> tuple[Path, dict]:
    path = tmp_path / f"{cause}-{seed}.kdump"
    generate(Scenario(seed=seed, ram="64M", log=100, panic=True, panic_cause=cause), path, "kdump")
    return path, json.loads(Path(f"{path}.truth.json").read_text())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], tuple[Path, dict]]:
    d = tmp_path_factory.mktemp("panics")
    return {(c, s): guest(d, c, s) for c in PANIC_CAUSES for s in (1, 2)}


def test_panic_line_and_last_lines_are_what_the_guest_logged(fleet: dict) -> None:
    for (_cause, _seed), (path, truth) in fleet.items():
        written = [r["text"] for r in truth["printk"]["records"]]
        rec = triage(path)
        assert rec.error_class is None and rec.exit_code == 0
        assert rec.panic == next(t for t in written if t.startswith("Kernel panic - not syncing: "))
        assert rec.last_lines and rec.last_lines[-1] == rec.panic and set(rec.last_lines) <= set(written)
        assert rec.crash_time == truth["vmcoreinfo"]["crashtime"]
        last_ts = max(r["ts_nsec"] for r in truth["printk"]["records"])
        assert rec.uptime == pytest.approx(last_ts / 1e9)


def test_equal_causes_share_a_fingerprint_distinct_causes_do_not(fleet: dict) -> None:
    prints = {key: triage(path).fingerprint for key, (path, _) in fleet.items()}
    assert all(prints[(c, 1)] == prints[(c, 2)] for c in PANIC_CAUSES)
    assert len({prints[(c, 1)] for c in PANIC_CAUSES}) == len(PANIC_CAUSES)
    assert None not in prints.values()
