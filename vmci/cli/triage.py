"""``vmci triage`` and ``vmci report``: one JSON Lines record per dump over a fleet, and the
summaries (tables, an HTML page) of such records."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from vmci.cli.app import errors, settings
from vmci.cli.params import BaseOpt, FormatOpt, parse_int
from vmci.errors import UsageError

SummaryOpt = Annotated[bool, typer.Option("--summary", help="Print tables grouping the dumps by crash "
                                          "fingerprint, kernel release and status.")]
HtmlOpt = Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML page: plots of "
                                              "dumps per fingerprint, release and status, and a table "
                                              "of every dump.")]


class FleetProgress:
    """A rich bar on stderr: dumps done of total, rate, ETA and failures."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.failed = 0
        self._bar = Progress(
            TextColumn("triage"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            transient=True, console=Console(stderr=True),
        )
        self._task = self._bar.add_task("triage", total=total, rate="", failed=0)
        self._bar.start()

    def advance(self, failed: bool) -> None:
        self.failed += failed
        task = self._bar.tasks[0]
        speed = task.speed
        self._bar.update(self._task, advance=1, failed=self.failed,
                         rate=f"{speed:.1f}/s" if speed else "")

    def close(self) -> None:
        self._bar.stop()


def _summary(records: list[Any], out: IO[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    from vmci.fleet.report import summarise

    s = summarise(records)
    c = Console(file=out, highlight=False, width=None if out.isatty() else 160)
    c.print(f"{s.total} dump(s): {s.total - s.failed} read, {s.failed} failed")
    for title, rows, with_label in (("By crash fingerprint", s.by_fingerprint, True),
                                    ("By kernel release", s.by_release, False),
                                    ("By status", s.by_status, False)):
        t = Table("group", "dumps", "failed", *(["panic"] if with_label else []), "example",
                  title=title, title_justify="left")
        for r in rows:
            t.add_row(r.key, str(r.dumps), str(r.failed), *([r.label] if with_label else []), r.example)
        c.print(t)


def _write_html(path: Path, records: list[Any]) -> None:
    from vmci.fleet.report import html_page

    try:
        path.write_text(html_page(records), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"--html: cannot write {path}: {e.strerror}") from None


def triage(
    paths: Annotated[list[str], typer.Argument(help="Dumps: files, directories, glob patterns.")],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into subdirectories "
                                            "(and let ** match them in patterns).")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the records to this JSON "
                                                "Lines file instead of stdout (appended to when it is "
                                                "also the --resume file).")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Worker processes (default: the CPU "
                                             "count; 1 runs in this process).")] = None,
    dask: Annotated[str | None, typer.Option("--dask", help="Run on a Dask cluster: a scheduler address "
                                             "(tcp://host:8786) or 'local' for a LocalCluster on this "
                                             "machine.  Needs vmci[dask].")] = None,
    path_map: Annotated[list[str] | None, typer.Option("--path-map", help="OLD=NEW: rewrite a path "
                                                       "prefix into the path the workers see "
                                                       "(repeatable; records keep the given path).")]
    = None,
    worker_wait: Annotated[float, typer.Option("--worker-wait", min=0, help="With --dask: seconds the "
                                               "cluster may have no worker before the dumps not yet "
                                               "done are recorded as failed.")] = 60.0,
    resume: Annotated[Path | None, typer.Option("--resume", help="Skip dumps this JSON Lines file "
                                                "already records (same path, size and mtime).")] = None,
    summary: SummaryOpt = False,
    html: HtmlOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no notes.")] = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Triage many dumps: one JSON record per dump (JSON Lines), in parallel, resumable.

    Each record holds the dump's format, kernel release, build ID, VMCOREINFO source, KASLR
    values, check status, missing memory, or the error that stopped it.  Records stream as each
    dump completes; a progress bar shows on stderr when it is a terminal.  Exit status: 0 every
    dump was read; 1 some could not be (their records carry error_class and exit_code); 2 usage.
    """
    with errors():
        from vmci.fleet.runners import RunConfig, parse_path_map, plan, run
        from vmci.fleet.triage import TriageOptions

        if jobs is not None and jobs < 1:
            raise UsageError(f"--jobs must be at least 1, not {jobs}")
        quiet = quiet or settings.quiet
        config = RunConfig(jobs=jobs, dask=dask, path_map=parse_path_map(path_map or []),
                           worker_wait=worker_wait)
        options = TriageOptions(format=format, raw_base=parse_int(raw_base, "--raw-base"))
        work = plan(paths, recursive=recursive, resume=resume)
        if work.skipped and not quiet:
            typer.echo(f"vmci: {work.skipped} dump(s) already in {resume}: skipped", err=True)
        append = output is not None and resume is not None and output.resolve() == resume.resolve()
        try:
            sink: IO[str] = output.open("a" if append else "w", encoding="utf-8") if output else sys.stdout
        except OSError as e:
            raise UsageError(f"--output: cannot write {output}: {e.strerror}") from None
        progress = FleetProgress(len(work.todo)) if not quiet and sys.stderr.isatty() and work.todo else None
        records = []
        try:
            for rec in run(work.todo, options, config):
                sink.write(json.dumps(rec.to_dict(), separators=(",", ":")) + "\n")
                sink.flush()
                records.append(rec)
                if progress is not None:
                    progress.advance(rec.failed)
        finally:
            if progress is not None:
                progress.close()
            if output is not None:
                sink.close()
        if summary:
            _summary(records, sys.stderr if output is None else sys.stdout)
        if html is not None:
            _write_html(html, records)
        if any(r.failed for r in records):
            raise typer.Exit(1)


def report(
    files: Annotated[list[Path], typer.Argument(help="JSON Lines files written by vmci triage.")],
    html: HtmlOpt = None,
) -> None:
    """Summarise vmci triage records: tables by crash fingerprint, kernel release and status.

    A dump recorded twice (a resumed run) counts once, its last record.  Exit status: 0 every
    dump was read; 1 some could not be; 2 usage.
    """
    with errors():
        from vmci.fleet.report import read_jsonl

        records = {r.path: r for f in files for r in read_jsonl(f)}
        recs = list(records.values())
        _summary(recs, sys.stdout)
        if html is not None:
            _write_html(html, recs)
        if any(r.failed for r in recs):
            raise typer.Exit(1)
