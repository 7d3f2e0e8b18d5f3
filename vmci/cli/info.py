"""``vmci info``: describe a dump."""

from __future__ import annotations

import json

import typer

from vmci.cli.app import errors, jsonable
from vmci.cli.params import BaseOpt, DumpArg, FormatOpt, JsonOpt, open_dump_arg


def info(
    dump: DumpArg, json_out: JsonOpt = False, format: FormatOpt = "auto", raw_base: BaseOpt = "0"
) -> None:
    """Describe a dump: format, architecture, memory ranges, notes, CPUs and header facts."""
    with errors(), open_dump_arg(dump, format, raw_base) as d:
        from vmci.analysis.analyze import dump_info

        info = dump_info(d)
        if json_out:
            typer.echo(json.dumps(jsonable(info.to_dict()), indent=2))
            return
        from vmci.cli.render import render_info

        render_info(info)
