"""``vmci convert``: any dump to a kdump or ELF file that crash, drgn, libkdumpfile and makedumpfile
open, with makedumpfile's page filtering (:func:`vmci.convert.convert`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vmci.cli.app import errors, jsonable, note, settings
from vmci.cli.params import JsonOpt
from vmci.cli.progress import progress_for

_STAGES = {"vmcoreinfo": "looking for the VMCOREINFO", "struct page": "reading struct page",
           "pages": "copying pages"}


DumpsArg = Annotated[list[Path], typer.Argument(
    help="The dump: any format vmci reads (ELF, kdump, flattened kdump, QEMU migration stream, libvirt "
         "save); several files for a makedumpfile --split set.", metavar="dump...")]
OutputOpt = Annotated[Path, typer.Option(
    "--output", "-o", help="The file to write (with --split N: OUT.1 .. OUT.N).")]
ToOpt = Annotated[str, typer.Option(
    "--to", help="kdump: kdump-compressed as makedumpfile writes it; kdump-flat: its flattened stream; "
                 "elf: an ELF core with every note; kexec-elf: /proc/vmcore as a capture kernel exports it "
                 "(makedumpfile, vmcore-dmesg).")]
CompressOpt = Annotated[str, typer.Option(
    "--compress", "-c", help="Page codec of a kdump file: zlib, lzo, snappy, zstd, none.")]
LevelOpt = Annotated[int, typer.Option(
    "--level", "-d", min=0, max=31, help="makedumpfile's dump level, a sum of what to leave out: 1 zero "
                                         "pages, 2 cache without private data, 4 all cache, 8 user data, "
                                         "16 free pages.")]
SplitOpt = Annotated[int | None, typer.Option(
    "--split", min=1, help="Write a kdump split set of N files, as makedumpfile --split.")]


def convert(dumps: DumpsArg, output: OutputOpt, to: ToOpt = "kdump", compress: CompressOpt = "zlib",
            level: LevelOpt = 1, split: SplitOpt = None, json_out: JsonOpt = False) -> None:
    """Convert a dump into a kdump or ELF file other tools open: the VMCOREINFO vmci finds (or
    synthesizes) as the note and in the header, the architecture, the true phys_base, the vCPUs'
    registers, and makedumpfile's page filtering. The source is never modified; the output appears
    only when complete.

    Exit status: 0 written; 2 usage; 3 bad or unsupported dump, or a level that needs struct page
    without a VMCOREINFO; 5 OS error.
    """
    with errors():
        from vmci.convert import convert as run

        bar = progress_for(not settings.quiet and not json_out, _STAGES["vmcoreinfo"], "pages")

        def show(stage: str, done: int, total: int) -> None:
            if bar is not None:
                bar.stage(_STAGES.get(stage, stage), done, total)

        try:
            result = run(dumps, output, to=to, compress=compress, level=level, split=split,
                         progress=show if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        if json_out:
            typer.echo(json.dumps(jsonable(result.to_dict()), indent=2))
            return
        for path in result.outputs:
            typer.echo(str(path))
        what = f"{result.target}" + (f", {result.compression}" if result.target.startswith("kdump") else "")
        note(f"wrote {what}, dump level {result.level}: {result.pages_written} pages "
             f"({result.zero_pages} zero), {result.bytes_written / (1 << 20):.1f} MiB")
        from vmci.core.numbers import signed_hex

        pb = result.phys_base
        pb = pb - (1 << 64) if pb is not None and pb >= 1 << 63 else pb  # arm64's PHYS_OFFSET: signed
        note(f"VMCOREINFO: {result.vmcoreinfo_source}; arch {result.arch}; phys_base "
             f"{signed_hex(pb, none='unknown')}")
        if result.excluded:
            note("excluded: " + ", ".join(f"{n} {k}" for k, n in result.excluded.items()))
        for r in result.repairs:
            note(f"repaired: {r}")
        for w in result.warnings:
            note(f"warning: {w}")
