"""``vmci kaslr``: KERNELOFFSET and phys_base, from the VMCOREINFO and from the page tables."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vmci.cli.app import errors, exit_with
from vmci.cli.params import BaseOpt, BlobOpt, DumpArg, FormatOpt, JsonOpt, SymbolsOpt, blob_arg, open_dump_arg


def kaslr(
    dump: DumpArg,
    json_out: JsonOpt = False,
    system_map: SymbolsOpt = None,
    scan: Annotated[
        bool, typer.Option("--scan", help="Also run every discovery strategy (memory scan included) to find "
                           "a VMCOREINFO to compare with; default: the dump's own note / kdump header only.")
    ] = False,
    addr_blob: BlobOpt = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Also search the image for init_uts_ns and swapper_pg_dir.")
    ] = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """KERNELOFFSET and phys_base: from the VMCOREINFO and, independently, from the vCPUs' page tables.

    Exit status: 0 when an answer exists and the sources agree, 1 when there is none or they conflict.
    """
    with errors():
        blob = blob_arg(addr_blob, "--addr-blob", 8) if addr_blob is not None else None
        syms = None
        if system_map is not None:
            from vmci.kernel.symbols import load_symbols

            syms = load_symbols(system_map)
        with open_dump_arg(dump, format, raw_base) as d:
            from vmci.analysis.kaslr import kaslr_result, vmcoreinfo_for_kaslr

            text, source = vmcoreinfo_for_kaslr(d, scan=scan, addr_blob=blob)
            result = kaslr_result(d, vmcoreinfo=text, source=source, symbols=syms, deep=deep)
            for w in d.warnings[:8]:  # what the reader said about the file (truncation, claims)
                typer.echo(f"vmci: warning: {w}", err=True)
        if json_out:
            typer.echo(json.dumps({"schema": 1, **result.to_dict()}, indent=2))
        else:
            from vmci.cli.render import render_kaslr

            render_kaslr(result)
        from vmci.analysis.result import kaslr_exit_code

        exit_with(kaslr_exit_code(result.to_dict()))
