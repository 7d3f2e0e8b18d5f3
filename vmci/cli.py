"""The ``vmci`` command line: a thin typer layer over the library.

Heavy modules (pyelftools, construct, codecs, drgn) are imported inside the commands so that
``vmci --help`` and quick commands start fast.  Every :class:`~vmci.errors.VmciError` becomes one
line on stderr and its documented exit code (see :mod:`vmci.errors`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import UsageError, VmciError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Find, check and use the Linux VMCOREINFO in virtual-machine memory dumps.",
    epilog="Exit codes: 0 ok, 1 negative answer, 2 usage, 3 bad or unsupported dump, "
    "4 address not in the dump, 5 OS error.",
)

DumpArg = Annotated[Path, typer.Argument(help="The dump file (ELF, kdump, flattened kdump, raw).")]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="Force a reader: auto, elf, kdump, flattened, raw.")
]
BaseOpt = Annotated[str, typer.Option("--raw-base", help="Physical address of a raw image's first byte.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def parse_int(text: str, what: str) -> int:
    """An integer from ``0x…``, decimal, or with a K/M/G suffix (powers of 1024)."""
    t = text.strip().lower().replace("_", "")
    mult = 1
    if t and t[-1] in "kmg" and not t.startswith("0x"):
        mult = 1 << {"k": 10, "m": 20, "g": 30}[t[-1]]
        t = t[:-1]
    try:
        value = int(t, 0) * mult
    except ValueError:
        raise UsageError(f"{what} must be an integer (decimal or 0x-hex), not {text!r}") from None
    if value < 0:
        raise UsageError(f"{what} must not be negative")
    return value


@contextmanager
def _errors() -> Iterator[None]:
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


def _open(dump: Path, format: str, raw_base: str) -> Any:
    from .formats import open_dump

    return open_dump(dump, format=format, raw_base=parse_int(raw_base, "--raw-base"))


@app.command()
def info(
    dump: DumpArg, json_out: JsonOpt = False, format: FormatOpt = "auto", raw_base: BaseOpt = "0"
) -> None:
    """Describe a dump: format, architecture, memory ranges, notes, CPUs and header facts."""
    with _errors(), _open(dump, format, raw_base) as d:
        from .report import dump_summary

        summary = dump_summary(d)
        if json_out:
            typer.echo(json.dumps(jsonable(summary), indent=2))
            return
        from .render import render_info

        render_info(summary)


@app.command()
def read(
    dump: DumpArg,
    paddr: Annotated[str, typer.Argument(help="Physical address (0x-hex or decimal).")],
    length: Annotated[str, typer.Argument(help="Number of bytes (suffixes K, M, G allowed).")],
    hexdump: Annotated[
        bool, typer.Option("--hex", "-x", help="Print a hex dump instead of raw bytes.")
    ] = False,
    zero_fill: Annotated[
        bool, typer.Option("--zero-fill", help="Read holes and excluded pages as zeros instead of failing.")
    ] = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Read physical memory, like crash's ``rd -p``: raw bytes to stdout, or ``--hex``."""
    with _errors():
        addr = parse_int(paddr, "PADDR")
        n = parse_int(length, "LENGTH")
        if n > 1 << 30:
            raise UsageError("LENGTH is limited to 1 GiB per read")
        with _open(dump, format, raw_base) as d:
            out = sys.stdout.buffer
            step = 1 << 20
            for pos in range(addr, addr + n, step):
                data = d.memory.read(pos, min(step, addr + n - pos), zero_fill=zero_fill)
                out.write(hexdump_lines(pos, data).encode() if hexdump else data)
            out.flush()


def hexdump_lines(addr: int, data: bytes) -> str:
    """crash-style lines: address, 16 bytes in hex, printable ASCII."""
    lines = []
    for off in range(0, len(data), 16):
        row = data[off : off + 16]
        hexes = " ".join(f"{b:02x}" for b in row)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{addr + off:16x}:  {hexes:<47}  {text}\n")
    return "".join(lines)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
