"""``vmci vmgenid``: the VM Generation ID as QMP prints it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vmci.cli.app import errors, exit_with
from vmci.cli.params import BaseOpt, DumpArg, FormatOpt, JsonOpt, blob_arg, open_dump_arg


def vmgenid(
    dump: DumpArg,
    addr_blob: Annotated[
        str | None,
        typer.Option("--addr-blob", help="The saved etc/vmgenid_addr (8 bytes: file, hex as stored, "
                     "or 0x<address>); default: walk ACPI (SSDT VMGENID, VGIA)."),
    ] = None,
    json_out: JsonOpt = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Print the VM Generation ID as QMP query-vm-generation-id does (exit 1 when there is none)."""
    with errors():
        blob = blob_arg(addr_blob, "--addr-blob", 8) if addr_blob is not None else None
        with open_dump_arg(dump, format, raw_base) as d:
            from vmci.analysis.vmgenid import find_vmgenid_in_dump

            found = find_vmgenid_in_dump(d, addr_blob=blob)
        if json_out:
            typer.echo(json.dumps(found.report(), indent=2))
            exit_with(found.exit_code)
            return
        typer.echo(str(found.require().guid))
