"""``vmci analyze``: every discovery strategy, the checks, the key values."""

from __future__ import annotations

from typing import Annotated

import typer

from vmci.cli.app import errors, exit_with
from vmci.cli.params import BaseOpt, BlobOpt, DumpArg, FormatOpt, JsonOpt, RecordOpt, blob_arg, open_dump_arg
from vmci.cli.progress import progress_for
from vmci.errors import UsageError


def analyze(
    dump: DumpArg,
    addr_blob: BlobOpt = None,
    fw_cfg_record: RecordOpt = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option("--strategy", "-s", help="Run only this strategy (repeatable): elf-note, kdump-header, "
                     "address-blob, fw-cfg-record, acpi, memory-scan."),
    ] = None,
    rfc_offset: Annotated[
        int, typer.Option("--rfc-offset", help="RFC page layout: 40 (seed 001) or 36 (later revision).")
    ] = 40,
    scan: Annotated[
        str, typer.Option("--scan", help="Memory scan: auto (only when nothing else found a text; stops "
                          "once its note cannot be outranked), aligned (page-aligned notes only) or all "
                          "(exhaustive: always, every byte, every copy).")
    ] = "auto",
    json_out: JsonOpt = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Find and check the VMCOREINFO: every strategy with its evidence, consistency checks, key values.

    Exit status: 0 when a VMCOREINFO text was found and no check FAILed; 1 when none was found
    or a check FAILed; 2 usage; 3 bad dump; 4 address not in the dump; 5 OS error.
    """
    with errors():
        from vmci.discover.strategy import SCAN_MODES
        from vmci.machine.qemu_devices import RFC_OFFSETS

        if scan not in SCAN_MODES:
            raise UsageError(f"--scan is {', '.join(SCAN_MODES)}, not {scan!r}")
        if rfc_offset not in RFC_OFFSETS:
            raise UsageError(f"--rfc-offset is 40 or 36, not {rfc_offset}")
        blob = blob_arg(addr_blob, "--addr-blob", 8) if addr_blob is not None else None
        record = blob_arg(fw_cfg_record, "--fw-cfg-record", 16) if fw_cfg_record is not None else None
        progress = progress_for(not json_out)
        with open_dump_arg(dump, format, raw_base) as d:
            from vmci.analysis.analyze import analyze as run_analyze

            try:
                result = run_analyze(d, addr_blob=blob, fw_cfg_record=record, strategies=strategy or None,
                                     rfc_offset=rfc_offset, progress=progress, scan=scan)
            finally:
                if progress is not None:
                    progress.close()
        if json_out:
            typer.echo(result.to_json())
        else:
            from vmci.cli.render import render_analysis

            render_analysis(result)
        exit_with(result.exit_code)
