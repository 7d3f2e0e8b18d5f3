"""Summaries of triage records: groups by crash fingerprint, kernel release and status (typed
rows the CLI renders as tables), and a self-contained HTML page with bar charts and a table of
every dump.

The page needs no network and no script: styles are inline, the charts are SVG drawn here.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from vmci.errors import UsageError
from vmci.fleet.record import TriageRecord

__all__ = ["GroupRow", "Summary", "html_page", "read_jsonl", "status_of", "summarise"]

#: Group key of a record without the value grouped on.
NONE = "(none)"


@dataclass(frozen=True)
class GroupRow:
    """One group: ``key`` (a fingerprint, release or status), how many dumps, how many of those
    failed, an example path, and ``label`` (the example's panic line, for fingerprints)."""

    key: str
    dumps: int
    failed: int
    example: str
    label: str = ""


@dataclass(frozen=True)
class Summary:
    """Totals and the three groupings, largest group first."""

    total: int
    failed: int
    by_fingerprint: tuple[GroupRow, ...]
    by_release: tuple[GroupRow, ...]
    by_status: tuple[GroupRow, ...]


def status_of(rec: TriageRecord) -> str:
    """PASS, WARN or FAIL for a dump that was read; ``ERROR <class>`` for one that was not."""
    if rec.failed:
        return f"ERROR {rec.error_class}"
    return rec.status or NONE


def _group(records: Sequence[TriageRecord], key: Callable[[TriageRecord], str | None],
           label: Callable[[TriageRecord], str | None] = lambda r: None) -> tuple[GroupRow, ...]:
    groups: dict[str, list[TriageRecord]] = {}
    for r in records:
        groups.setdefault(key(r) or NONE, []).append(r)
    rows = [GroupRow(k, len(rs), sum(r.failed for r in rs), rs[0].path,
                     next((lab for r in rs if (lab := label(r))), ""))
            for k, rs in groups.items()]
    return tuple(sorted(rows, key=lambda g: (-g.dumps, g.key)))


def summarise(records: Iterable[TriageRecord]) -> Summary:
    """Group ``records`` by fingerprint, release and status."""
    recs = list(records)
    return Summary(
        total=len(recs),
        failed=sum(r.failed for r in recs),
        by_fingerprint=_group(recs, lambda r: r.fingerprint, lambda r: r.panic),
        by_release=_group(recs, lambda r: r.release),
        by_status=_group(recs, status_of),
    )


def read_jsonl(path: str | os.PathLike[str]) -> list[TriageRecord]:
    """The records of a ``vmci triage`` JSON Lines file; a later record of the same path wins
    (a resumed run appends)."""
    out: dict[str, TriageRecord] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = TriageRecord.from_dict(json.loads(line))
                except (ValueError, TypeError) as e:
                    raise UsageError(f"{path}:{n}: not a triage record: {e}") from None
                out[rec.path] = rec
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    return list(out.values())


# -- HTML ----------------------------------------------------------------------------------------

COLOURS = {"PASS": "#2e7d32", "WARN": "#e09b00", "FAIL": "#c62828", "ERROR": "#6a1b1b"}
BAR = "#1565c0"
BAR_FAILED = "#c62828"

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
#plots { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: .3em; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #eee; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fdecea; }
.PASS { color: #2e7d32; } .WARN { color: #a36b00; } .FAIL, .ERROR { color: #c62828; font-weight: 600; }
"""


def _short(text: str, n: int = 38) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _bar_chart(ident: str, rows: Sequence[GroupRow], colour: Callable[[GroupRow], str],
               limit: int = 15) -> str:
    """Horizontal bars: one per group (the ``limit`` largest), failed dumps stacked in red."""
    shown = list(rows[:limit])
    label_w, bar_w, row_h, top = 250, 300, 22, 6
    height = top * 2 + row_h * max(1, len(shown))
    width = label_w + bar_w + 50
    most = max((r.dumps for r in shown), default=1)
    parts = [f'<svg id="{ident}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">']
    if not shown:
        parts.append(f'<text x="10" y="{top + 15}" fill="#777">no dumps</text>')
    for i, r in enumerate(shown):
        y = top + i * row_h
        w = max(2.0, bar_w * r.dumps / most)
        wf = bar_w * r.failed / most if r.failed else 0.0
        name = r.label or r.key
        tip = html.escape(f"{r.key}: {r.dumps} dump(s), {r.failed} failed" + (f" \u2014 {r.label}" if r.label
                                                                              else ""))
        parts.append(f'<g><title>{tip}</title>'
                     f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">'
                     f'{html.escape(_short(name))}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                     f'fill="{colour(r)}"/>')
        if wf:
            parts.append(f'<rect x="{label_w + w - wf:.1f}" y="{y + 3}" width="{wf:.1f}" '
                         f'height="{row_h - 6}" fill="{BAR_FAILED}"/>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" font-size="12">{r.dumps}</text></g>')
    if len(rows) > limit:
        parts.append(f"<!-- {len(rows) - limit} smaller group(s) not drawn -->")
    parts.append("</svg>")
    return "".join(parts)


def _status_colour(r: GroupRow) -> str:
    return COLOURS.get(r.key.split()[0], BAR)


def _cell(value: object, cls: str = "") -> str:
    text = "" if value is None else str(value)
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape(text)}</td>"


def html_page(records: Sequence[TriageRecord], title: str = "vmci triage") -> str:
    """A self-contained page: totals, three bar charts (dumps per fingerprint, per release, per
    status with the failures) and a table listing every dump."""
    s = summarise(records)
    charts = [
        ("plot-fingerprint", "Dumps per crash fingerprint", s.by_fingerprint, lambda r: BAR),
        ("plot-release", "Dumps per kernel release", s.by_release, lambda r: BAR),
        ("plot-status", "Dumps per status (failures in red)", s.by_status, _status_colour),
    ]
    figures = "".join(f"<figure><figcaption>{html.escape(cap)}</figcaption>{_bar_chart(i, rows, col)}"
                      f"</figure>" for i, cap, rows, col in charts)
    head = ("<tr><th>#</th><th>path</th><th>format</th><th>release</th><th>status</th>"
            "<th>fingerprint</th><th>panic</th><th>KERNELOFFSET</th><th>VMCOREINFO from</th>"
            "<th>failing checks</th><th>error</th><th>seconds</th></tr>")
    rows = []
    for n, r in enumerate(sorted(records, key=lambda r: r.path), 1):
        st = status_of(r)
        rows.append(
            f'<tr class="{"failed" if r.failed else ""}">' + _cell(n, "num") + _cell(r.path) + _cell(r.format)
            + _cell(r.release) + _cell(st, st.split()[0]) + _cell(r.fingerprint) + _cell(r.panic)
            + _cell(None if r.kerneloffset is None else hex(r.kerneloffset), "num")
            + _cell(r.vmcoreinfo_source) + _cell(", ".join(r.failing_checks)) + _cell(r.error)
            + _cell(None if r.elapsed is None else f"{r.elapsed:.3f}", "num") + "</tr>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p id="totals">{s.total} dump(s), {s.total - s.failed} read, {s.failed} failed; '
        f"{len(s.by_fingerprint)} fingerprint group(s), {len(s.by_release)} release(s).</p>"
        f'<section id="plots">{figures}</section>'
        f'<h2>Every dump</h2><table id="dumps"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
        "</body></html>\n"
    )
