"""``vmci dmesg``: the kernel log from the VMCOREINFO alone, as makedumpfile --dump-dmesg prints it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmci.cli.app import errors, note, write_output
from vmci.cli.params import BaseOpt, BlobOpt, DumpArg, FormatOpt, open_dump_arg, optional_blob, parse_int

LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warn": 4, "notice": 5, "info": 6, "debug": 7}
FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7}


def _names(values: list[str] | None, table: dict[str, int], what: str) -> set[int] | None:
    if not values:
        return None
    out = set()
    for v in values:
        for item in v.split(","):
            item = item.strip().lower()
            if item in table:
                out.add(table[item])
            elif item.isdigit():
                out.add(int(item))
            else:
                from vmci.errors import UsageError

                raise UsageError(f"{what}: {item!r} is not one of {', '.join(table)} or a number")
    return out


def dmesg(
    dump: DumpArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    caller: Annotated[
        bool, typer.Option("--caller", help="Add the caller field ([    T123] / [     C1]) as makedumpfile "
                           ">= 1.7.5 prints it.")
    ] = False,
    level: Annotated[
        list[str] | None, typer.Option("--level", "-l", help="Only these levels (emerg..debug or 0-7; "
                                       "repeatable or comma-separated).")
    ] = None,
    facility: Annotated[
        list[str] | None,
        typer.Option("--facility", help="Only these facilities (kern, user, ... or a number)."),
    ] = None,
    since_clear: Annotated[
        bool, typer.Option("--since-clear", help="Only records since the last 'dmesg -C' (makedumpfile's "
                           "--partial-dmesg).")
    ] = False,
    tail: Annotated[int | None, typer.Option("--tail", "-n", help="Only the last N records.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON Lines, one record per line.")] = False,
    kernel: Annotated[
        str, typer.Option("--kernel", help="Whose log: auto (the crashed kernel if a kdump capture kernel "
                          "ran, else the dump's), crashed, capture, chosen, or a VMCOREINFO note address.")
    ] = "auto",
    addr_blob: BlobOpt = None,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Print the kernel log of DUMP from its VMCOREINFO alone (no debuginfo), byte for byte as
    'makedumpfile --dump-dmesg' writes it.

    Works on every format vmci reads and on note-less dumps (the text is found by scanning).
    Exit status: 0 log printed, 1 no VMCOREINFO or no kernel log in it, 2-5 as for every command.
    """
    with errors():
        from vmci.analysis.kernel_log import read_kernel_log
        from vmci.kernel.printk import format_dmesg, format_json_lines

        levels = _names(level, LEVELS, "--level")
        facilities = _names(facility, FACILITIES, "--facility")
        which: str | int = kernel if not kernel[:1].isdigit() else parse_int(kernel, "--kernel")
        blob = optional_blob(addr_blob, "--addr-blob", 8)
        with open_dump_arg(dump, format, raw_base) as d:
            result = read_kernel_log(d, kernel=which, since_clear=since_clear, addr_blob=blob)
        k = result.kernel
        where = f" @{k.paddr:#x}" if k.paddr is not None else ""
        others = ", ".join(f"{o.role} kernel" for o in result.kernels if o is not k)
        note(f"vmci: {result.log.variant} log of the {k.role} kernel {k.osrelease} (VMCOREINFO from "
             f"{k.source}{where}); {len(result.log.records)} records"
             + (f"; also in the dump: {others} (--kernel)" if others else ""))
        for w in result.log.warnings:
            note(f"vmci: warning: {w}")
        if json_out:
            data = format_json_lines(result.log, levels=levels, facilities=facilities, tail=tail)
        else:
            data = format_dmesg(result.log, caller=caller, levels=levels, facilities=facilities, tail=tail)
        write_output(data, output)
