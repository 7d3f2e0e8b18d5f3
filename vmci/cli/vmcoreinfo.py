"""``vmci vmcoreinfo``: the text (or note) as found, or synthesized."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmci.cli.app import errors, write_output
from vmci.cli.params import BaseOpt, BlobOpt, DumpArg, FormatOpt, blob_arg, open_dump_arg


def vmcoreinfo(
    dump: DumpArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    note: Annotated[bool, typer.Option("--note", help="The whole ELF note, not just the text.")] = False,
    addr_blob: BlobOpt = None,
    synthesize: Annotated[
        bool, typer.Option("--synthesize", help="When no text is found, synthesize one from the page tables "
                           "and the kernel image (marked VMCI_SYNTHESIZED=1; x86_64, aarch64).")
    ] = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Print the VMCOREINFO text exactly as found (ready for ``drgn --vmcoreinfo``), or the ELF note.

    Exit status: 0 found (or synthesized), 1 not found, 2-5 as for every command.
    """
    with errors():
        blob = blob_arg(addr_blob, "--addr-blob", 8) if addr_blob is not None else None
        with open_dump_arg(dump, format, raw_base) as d:
            from vmci.analysis.text import vmcoreinfo_text

            found = vmcoreinfo_text(d, addr_blob=blob, synthesize=synthesize)
            if found.synthesized:
                typer.echo("vmci: no VMCOREINFO found; this text is SYNTHESIZED from the page tables",
                           err=True)
            raw = found.raw
        if note:
            from vmci.kernel.vmcoreinfo import build_note

            raw = build_note(raw, d.byte_order)
        write_output(raw, output)
