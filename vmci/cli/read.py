"""``vmci read``: physical memory as raw bytes or a hex dump."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from vmci.cli.app import errors
from vmci.cli.params import BaseOpt, DumpArg, FormatOpt, open_dump_arg, parse_int
from vmci.errors import UsageError


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
    """Read physical memory, like crash's 'rd -p': raw bytes to stdout, or a hex dump (--hex)."""
    with errors():
        addr = parse_int(paddr, "PADDR")
        n = parse_int(length, "LENGTH")
        if n > 1 << 30:
            raise UsageError("LENGTH is limited to 1 GiB per read")
        with open_dump_arg(dump, format, raw_base) as d:
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
