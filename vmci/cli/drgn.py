"""``vmci drgn``: drgn's REPL on a dump, with the VMCOREINFO vmci found."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmci.cli.app import errors
from vmci.cli.params import BaseOpt, BlobOpt, DumpArg, FormatOpt, blob_arg, parse_int


def drgn(
    dump: DumpArg,
    exec_code: Annotated[
        str | None, typer.Option("--exec-code", "-e", help="Run this Python code with drgn's globals "
                                 "(prog, ...) instead of the REPL.")
    ] = None,
    symbols: Annotated[
        list[Path] | None,
        typer.Option("--symbols", "-s", help="Load debug info from this file (repeatable)."),
    ] = None,
    no_default_symbols: Annotated[
        bool, typer.Option("--no-default-symbols", help="Do not look for vmlinux and modules by release.")
    ] = False,
    vmcoreinfo_file: Annotated[
        Path | None, typer.Option("--vmcoreinfo", help="Use this VMCOREINFO text instead of discovering it.")
    ] = None,
    addr_blob: BlobOpt = None,
    no_synthesize: Annotated[
        bool, typer.Option("--no-synthesize", help="Fail instead of synthesizing a VMCOREINFO.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No vmci banner line.")] = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Open drgn's REPL on DUMP with the VMCOREINFO vmci found (or synthesized), for dumps drgn refuses alone.

    Also for QEMU kdump (platform passed) and flattened files.  Needs drgn (pip install 'vmci[drgn]').
    """
    with errors():
        from vmci.integrations.drgn import run_interactive

        blob = blob_arg(addr_blob, "--addr-blob", 8) if addr_blob is not None else None
        run_interactive(dump, exec_code=exec_code, quiet=quiet, vmcoreinfo=vmcoreinfo_file, addr_blob=blob,
                        synthesize=not no_synthesize, debug_info=symbols or (),
                        default_debug_info=not no_default_symbols, format=format,
                        raw_base=parse_int(raw_base, "--raw-base"))
