"""The ``vmci`` command line: a thin typer layer over the library, one module per command.

:mod:`vmci.cli.app` holds the application and the one error boundary, :mod:`vmci.cli.params` the
shared parameters, :mod:`vmci.cli.render` the human output.  Heavy modules (pyelftools, construct,
codecs, drgn) are imported inside the commands so that ``vmci --help`` and quick commands start fast.
"""

from __future__ import annotations

from vmci.cli import analyze, convert, dmesg, drgn, generate, info, kaslr, read, triage, vmcoreinfo, vmgenid
from vmci.cli.app import app

# The order here is the order of ``vmci --help``.
app.command("info")(info.info)
app.command("read")(read.read)
app.command("analyze")(analyze.analyze)
app.command("vmcoreinfo")(vmcoreinfo.vmcoreinfo)
app.command("vmgenid")(vmgenid.vmgenid)
app.command("dmesg")(dmesg.dmesg)
app.command("generate")(generate.generate)
app.command("kaslr")(kaslr.kaslr)
app.command("drgn", context_settings={"allow_interspersed_args": True})(drgn.drgn)
app.command("convert")(convert.convert)
app.command("triage")(triage.triage)
app.command("report")(triage.report)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
