"""CLI help, options and exit-code text stay as documented: ``--help`` of every command equals a
stored copy (``golden/help-*.txt``, written with ``COLUMNS=100 NO_COLOR=1``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, run_cli

GOLDEN = Path(__file__).parent / "golden"
COMMANDS = ("", "info", "read", "analyze", "vmcoreinfo", "vmgenid", "dmesg", "kaslr", "drgn", "convert",
            "generate",
            "triage", "report")


@pytest.mark.parametrize("command", COMMANDS, ids=[c or "main" for c in COMMANDS])
def test_help_unchanged(command: str) -> None:
    p = run_cli([*([command] if command else []), "--help"], ROOT)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode() == (GOLDEN / f"help-{command or 'main'}.txt").read_text()


def test_version() -> None:
    from vmci import __version__

    p = run_cli(["--version"], ROOT)
    assert p.returncode == 0 and p.stdout.decode() == f"vmci {__version__}\n"


def test_completion_script_is_typers_own() -> None:
    p = run_cli(["--show-completion", "bash"], ROOT)
    assert p.returncode == 0, p.stderr.decode()
    assert b"complete" in p.stdout and b"_VMCI_COMPLETE" in p.stdout, p.stdout[:300]
