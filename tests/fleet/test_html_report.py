"""The HTML page of ``vmci triage --html`` / ``vmci report --html``: self-contained, lists every dump,
opens in headless Chromium without console errors, and its plot is not empty (pixels counted)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.fleet.conftest import Fleet, run_vmci
from vmci.fleet.record import TriageRecord, fingerprint
from vmci.fleet.report import BAR, html_page, read_jsonl, summarise


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (Debian package chromium; .ci/run installs it)")
        pytest.skip("chromium is not installed (Debian package chromium)")
    return path


def run_chromium(args: list[str], page: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
           *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def console_messages(stderr: str) -> list[str]:
    """What the page wrote to the console or threw (Chromium logs both as CONSOLE lines)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


class Table(HTMLParser):
    """The rows of table#dumps (cell texts) and every element's id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.ids: list[str] = []
        self.srcs: list[str] = []
        self._in, self._body, self._cell = False, False, False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"] or "")
        for key in ("src", "href"):
            if a.get(key):
                self.srcs.append(a[key] or "")
        if tag == "table" and a.get("id") == "dumps":
            self._in = True
        elif self._in and tag == "tbody":
            self._body = True
        elif self._body and tag == "tr":
            self.rows.append([])
        elif self._body and tag == "td":
            self._cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = False
        elif tag == "table":
            self._in = self._body = False

    def handle_data(self, data: str) -> None:
        if self._cell:
            self.rows[-1][-1] += data


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows of pixel bytes, bytes per pixel) of an 8-bit RGB/RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = bpp = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 4 if colour == 6 else 3
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def bar_pixels(png: Path) -> int:
    """Pixels of the plots' bar colour in the screenshot."""
    want = bytes.fromhex(BAR.removeprefix("#"))
    width, _, rows, bpp = decode_png(png.read_bytes())
    return sum(1 for row in rows for x in range(width) if row[x * bpp:x * bpp + 3] == want)


@pytest.fixture(scope="module")
def fleet_page(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("html")
    out, page = d / "fleet.jsonl", d / "fleet.html"
    p = run_vmci(["triage", str(fleet.dumps), "-q", "-o", str(out), "--html", str(page), "--summary"])
    assert p.returncode == 1, p.stderr
    assert "By crash fingerprint" in p.stdout and "By kernel release" in p.stdout
    return out, page


def test_page_lists_every_dump_and_needs_no_network(fleet: Fleet, fleet_page: tuple[Path, Path]) -> None:
    out, page = fleet_page
    t = Table()
    t.feed(page.read_text())
    names = sorted(p.name for p in fleet.dumps.iterdir())
    assert sorted(Path(r[1]).name for r in t.rows) == names
    assert {"plot-fingerprint", "plot-release", "plot-status", "dumps"} <= set(t.ids)
    assert t.srcs == []  # nothing loaded from anywhere: inline styles and SVG only
    # the report command over the JSON Lines file writes the same page
    again = out.with_suffix(".again.html")
    p = run_vmci(["report", str(out), "--html", str(again)])
    assert p.returncode == 1 and again.read_text() == page.read_text()


def test_page_opens_in_chromium_without_console_errors(fleet: Fleet, fleet_page: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    _, page = fleet_page
    p = run_chromium(["--dump-dom"], page, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert console_messages(p.stderr) == []
    t = Table()
    t.feed(p.stdout)  # the DOM as Chromium built it
    assert len(t.rows) == len(list(fleet.dumps.iterdir()))
    # the check sees a page that does log errors
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>console.error('broken'); nosuchfunction();</script>")
    assert len(console_messages(run_chromium(["--dump-dom"], bad, tmp_path).stderr)) == 2


def test_screenshot_shows_the_plots(fleet_page: tuple[Path, Path], tmp_path: Path) -> None:
    _, page = fleet_page
    shot = tmp_path / "page.png"
    p = run_chromium([f"--screenshot={shot}", "--window-size=1300,700"], page, tmp_path)
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    assert bar_pixels(shot) > 2000  # two bar charts in blue (fingerprint, release)
    # and the same count is zero for a page with nothing to plot
    empty = tmp_path / "empty.html"
    empty.write_text(html_page([]))
    shot2 = tmp_path / "empty.png"
    run_chromium([f"--screenshot={shot2}", "--window-size=1300,700"], empty, tmp_path)
    assert bar_pixels(shot2) == 0


def test_groups_by_fingerprint_release_status(tmp_path: Path) -> None:
    def rec(i: int, panic: str | None, release: str | None, status: str | None = "PASS",
            error: str | None = None) -> TriageRecord:
        return TriageRecord(path=f"/d/{i}", release=release, panic=panic, fingerprint=fingerprint(panic),
                            status=status, error_class=error, exit_code=3 if error else 0)

    null = "[ 1.0] BUG: kernel NULL pointer dereference, address: 0000000000000008"
    null2 = "[ 7.5] BUG: kernel NULL pointer dereference, address: 0000000000000010"
    sysrq = "Kernel panic - not syncing: sysrq triggered crash"
    records = [rec(1, null, "6.1.0"), rec(2, null2, "6.1.0"), rec(3, sysrq, "6.12.0", "WARN"),
               rec(4, None, None, None, "FormatError")]
    s = summarise(records)
    assert (s.total, s.failed) == (4, 1)
    assert [(g.dumps, g.label) for g in s.by_fingerprint] == [(2, null), (1, ""), (1, sysrq)]
    assert s.by_fingerprint[1].key == "(none)" and s.by_fingerprint[0].key == fingerprint(null2)
    assert {g.key: g.dumps for g in s.by_release} == {"6.1.0": 2, "6.12.0": 1, "(none)": 1}
    assert {g.key: (g.dumps, g.failed) for g in s.by_status} == {
        "PASS": (2, 0), "WARN": (1, 0), "ERROR FormatError": (1, 1)}
    page = html_page(records)
    assert page.count("<rect") >= 3 + 3 + 3
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    assert read_jsonl(jsonl) == records
