"""The repository stays lint-clean (ruff) and type-clean (mypy), with the settings in pyproject.toml."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (pip install {module})")
    # cwd is the repo root so the tool picks up pyproject.toml (and mypy its .mypy_cache)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_ruff_clean() -> None:
    res = _run_tool("ruff", "check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_clean() -> None:
    # no arguments: [tool.mypy] names the files, so this is exactly what a developer's `mypy` checks
    res = _run_tool("mypy")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success" in res.stdout, res.stdout + res.stderr
