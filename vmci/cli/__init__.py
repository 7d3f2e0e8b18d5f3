"""The ``vmci`` command line: a thin typer layer over the library, one module per command.

:mod:`vmci.cli.app` holds the application and the one error boundary, :mod:`vmci.cli.params` the
shared parameters, :mod:`vmci.cli.render` the human output.  Heavy modules (pyelftools, construct,
codecs, drgn) are imported inside the commands so that ``vmci --help`` and quick commands start fast.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import typer

from vmci.cli.app import new_app

# ``vmci.cli.app`` names the application, as it always has, not the module defining it: importing
# that module bound it to the name; :func:`__getattr__` builds the application on first use.
globals().pop("app", None)

#: The commands, in the order of ``vmci --help``: name, module of :mod:`vmci.cli` and function
#: there (imported only when the command is built), typer command settings.
COMMANDS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("info", "info", "info", {}),
    ("read", "read", "read", {}),
    ("analyze", "analyze", "analyze", {}),
    ("vmcoreinfo", "vmcoreinfo", "vmcoreinfo", {}),
    ("vmgenid", "vmgenid", "vmgenid", {}),
    ("dmesg", "dmesg", "dmesg", {}),
    ("generate", "generate", "generate", {}),
    ("kaslr", "kaslr", "kaslr", {}),
    ("drgn", "drgn", "drgn", {"context_settings": {"allow_interspersed_args": True}}),
    ("convert", "convert", "convert", {}),
    ("triage", "triage", "triage", {}),
    ("report", "triage", "report", {}),
)

__all__ = ["COMMANDS", "app", "app_for", "build", "main"]


def build(names: Sequence[str] | None = None) -> typer.Typer:
    """The application with the commands called ``names`` (all by default)."""
    built = new_app()
    for name, module, function, settings in COMMANDS:
        if names is None or name in names:
            fn = getattr(importlib.import_module(f"{__name__}.{module}"), function)
            built.command(name, **settings)(fn)
    return built


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole application, built on first use (CliRunner, documentation)
        value = globals()["app"] = build()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def app_for(args: Sequence[str]) -> typer.Typer:
    """The application to run for the command line ``args``: with every command for ``vmci``,
    ``vmci --help``, an unknown command and shell completion, else with only the command asked
    for.  typer builds the options of every command it holds at each run, which costs more
    start-up than most commands take; a command's own help, errors and behaviour do not depend
    on the other commands."""
    name = next((a for a in args if not a.startswith("-")), None)
    if name not in {c[0] for c in COMMANDS} or any(k.endswith("_COMPLETE") for k in os.environ):
        return build()
    return build([name])


def main() -> None:
    """Console-script entry point."""
    try:
        app_for(sys.argv[1:])()
    finally:
        # The process ends with this command.  The interpreter's last garbage collection would
        # traverse every object typer, construct and vmci made (about 12 ms, a tenth of a short
        # command); frozen, they are left to the exit.  Nothing needs that collection: vmci
        # closes its files with ``with``, atexit handlers still run, the interpreter flushes
        # stdout and stderr.
        gc.freeze()
