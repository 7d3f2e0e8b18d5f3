"""The typer application and the CLI's one error boundary and exit-code policy.

Every command runs its body inside :func:`errors`: a :class:`~vmci.errors.VmciError` becomes one
line on stderr and its documented exit code (see :mod:`vmci.errors`), an interrupt exits 130, a
closed pipe exits 0.  Commands never print tracebacks.  A command whose answer can be negative
ends with :func:`exit_with` and the ``exit_code`` the library's result decided.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from vmci.errors import VmciError

#: Exit code for an operating-system error outside a VmciError (e.g. writing an output file).
EXIT_OS_ERROR = 5

class Settings:
    """Global options, set once by :func:`main_options` before a command runs."""

    quiet: bool = False


settings = Settings()


def _version(value: bool) -> None:
    if value:
        from vmci import __version__

        typer.echo(f"vmci {__version__}")
        raise typer.Exit(0)


def main_options(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the data asked for and errors: no reports, "
                           "notes or progress (the exit status still tells).")
    ] = False,
) -> None:
    """Find, check and use the Linux VMCOREINFO in virtual-machine memory dumps.

    Colour follows the terminal and the NO_COLOR convention; progress bars appear on stderr, only
    when it is a terminal.
    """
    settings.quiet = quiet


def new_app() -> typer.Typer:
    """The application with its global options and no command yet."""
    app = typer.Typer(
        add_completion=True,
        no_args_is_help=True,
        rich_markup_mode=None,
        help="Find, check and use the Linux VMCOREINFO in virtual-machine memory dumps.",
        epilog="Exit codes: 0 ok, 1 negative answer, 2 usage, 3 bad or unsupported dump, "
        "4 address not in the dump, 5 OS error.",
    )
    app.callback()(main_options)
    return app


def note(message: str) -> None:
    """An informational line on stderr, unless ``--quiet``."""
    if not settings.quiet:
        typer.echo(message, err=True)


@contextmanager
def errors() -> Iterator[None]:
    """The error boundary every command body runs in."""
    try:
        yield
    except VmciError as e:
        typer.echo(f"vmci: error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("vmci: interrupted", err=True)
        raise typer.Exit(130) from None
    except BrokenPipeError:
        raise typer.Exit(0) from None


def exit_with(code: int) -> None:
    """End the command with ``code`` (0 returns): the status a library result decided."""
    if code:
        raise typer.Exit(code)


def os_error(path: Path, e: OSError) -> int:
    """Report a failed write of ``path``; returns the exit code."""
    typer.echo(f"vmci: error: cannot write {path}: {e.strerror}", err=True)
    return EXIT_OS_ERROR


def write_output(data: bytes, output: Path | None) -> None:
    """``data`` to the ``-o`` file, or to stdout; a failed write exits with :data:`EXIT_OS_ERROR`."""
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        output.write_bytes(data)
    except OSError as e:
        raise typer.Exit(os_error(output, e)) from None


def jsonable(value: Any) -> Any:
    """Convert facts to JSON types: bytes become text, tuples lists, keys strings."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    return value
