"""The fuzzing harness in the suite (issue 13): every target of ``fuzz/`` runs a few seconds under
atheris from generated seeds with no uncaught exception, no hang (an input over 5 s), no memory
blow-up and no modified input; and every input a campaign found failing stays fixed
(``regressions/<target>/``, minimized inputs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import atheris  # the test extra installs it: the suite must not skip the fuzz run
import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
sys.path.insert(0, str(FUZZ))

from harness import TARGETS, run_one  # noqa: E402

REGRESSIONS = Path(__file__).parent / "regressions"
SECONDS = 8  # per target: about a minute for all seven


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seeds import make_seeds

    root = tmp_path_factory.mktemp("seeds")
    made = make_seeds(root)
    assert set(made) == set(TARGETS)
    return root


@pytest.mark.parametrize("target", TARGETS)
def test_short_fuzz_run(seeds: Path, tmp_path: Path, target: str) -> None:
    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    corpus.mkdir()
    artifacts.mkdir()
    cmd = [sys.executable, str(FUZZ / f"fuzz_{target}.py"), str(corpus), str(seeds / target),
           f"-max_total_time={SECONDS}", "-timeout=5", "-rss_limit_mb=3072", "-print_final_stats=1",
           f"-artifact_prefix={artifacts}/"]
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=SECONDS + 120,
                       env=os.environ)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    assert list(artifacts.iterdir()) == [], out[-4000:]
    runs = [int(line.split()[-1]) for line in out.splitlines() if "number_of_executed_units" in line]
    assert runs and runs[-1] > 0, out[-2000:]
    # No bound on libFuzzer's peak_rss_mb here: it is getrusage's ru_maxrss, which Linux carries
    # over exec from the forking process (this pytest process); test_compare_results_are_not_leaked
    # covers the leak the campaign found.


def regression_inputs() -> list[Path]:
    return sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file())


@pytest.mark.parametrize("path", regression_inputs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression_input(path: Path, tmp_path: Path) -> None:
    target = path.parent.name
    data = path.read_bytes()
    t = time.perf_counter()
    run_one(data, target, tmp_path / "input")
    assert time.perf_counter() - t < 5
    assert path.read_bytes() == data


def test_compare_results_are_not_leaked(monkeypatch: pytest.MonkeyPatch) -> None:
    """atheris 3.0.0's ``_trace_cmp`` keeps a reference to a comparison's result when it is not a
    ``bool``: each numpy ``codes == DATA`` of the kdump walks leaked its array (the ``analysis``
    target ran out of memory at 3 GB after ~1,200 inputs).  The harness's plug hands such
    comparisons to Python, and still hands ints, strings and bytes to atheris (its feedback)."""
    import harness
    import numpy as np

    traced: list[tuple[object, object]] = []
    native = atheris._trace_cmp

    def recording(left: object, right: object, *rest: object) -> object:
        traced.append((left, right))
        return native(left, right, *rest)

    monkeypatch.setattr(atheris, "_trace_cmp", recording)

    def compare(a: object, b: object) -> object:
        return a == b

    compare = atheris.instrument_func(compare)
    codes = np.zeros(4096, np.uint8)
    assert sys.getrefcount(compare(codes, 1)) == 3  # the leak, unplugged: one reference too many
    harness.plug_compare_leak(atheris)
    harness.plug_compare_leak(atheris)  # idempotent: the plug is not wrapped twice
    traced.clear()
    result = compare(codes, 0)
    assert sys.getrefcount(result) == 2 and result.all()
    assert traced == []
    assert compare(3, 4) is False and compare(b"ab", b"ab") is True and compare("x", "y") is False
    assert traced == [(3, 4), (b"ab", b"ab"), ("x", "y")]


def test_a_modified_input_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness's own check: a reader that wrote to its file would be reported."""
    import harness

    def vandal(dump: object) -> None:
        Path(dump.path).write_bytes(b"changed")  # type: ignore[attr-defined]

    monkeypatch.setattr(harness, "exercise_dump", vandal)
    data = (FUZZ.parent / "testdata" / "noteless.kdump").read_bytes()
    with pytest.raises(AssertionError, match="modified"):
        harness.run_one(data, "kdump", tmp_path / "input")
