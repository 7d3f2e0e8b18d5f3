"""Formatted output of a read log: makedumpfile's ``--dump-dmesg`` text, kexec-tools'
``vmcore-dmesg`` text, or JSON lines (the rules are in :mod:`vmci.kernel.printk`)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

from vmci.errors import UsageError
from vmci.kernel.printk.records import NSEC, PrintkLog, PrintkRecord


def _escape_table(signed: bool) -> list[bytes]:
    table = []
    for b in range(256):
        if 0x20 <= b <= 0x7E or 0x09 <= b <= 0x0D:  # isprint() or isspace() in the C locale
            table.append(bytes([b]))
        elif signed and b >= 0x80:  # printf("\\x%02x", *p) of a signed char: 0xe9 prints as \xffffffe9
            table.append(b"\\x%02x" % (b + 0xFFFFFF00))
        else:
            table.append(b"\\x%02x" % b)
    return table


_ESCAPE = {"makedumpfile": _escape_table(True), "vmcore-dmesg": _escape_table(False)}
_PRINTABLE = re.compile(rb"[\x09-\x0d\x20-\x7e]*\Z")
STYLES = tuple(_ESCAPE)


def _format_record(rec: PrintkRecord, caller: bool, style: str) -> bytes:
    ts = rec.ts_nsec or 0
    prefix = b"[%5d.%06d] " % (ts // NSEC, ts % NSEC // 1000)
    if caller and rec.caller is not None:
        prefix += b"[%8s] " % rec.caller.encode()
    text = rec.text
    if not _PRINTABLE.match(text):
        text = b"".join(map(_ESCAPE[style].__getitem__, text))
    if style == "makedumpfile":
        text = text.replace(b"\n", b"\n" + b" " * len(prefix))
    return prefix + text + b"\n"


def select_records(records: Iterable[PrintkRecord], *, levels: Iterable[int] | None = None,
                   facilities: Iterable[int] | None = None, tail: int | None = None) -> list[PrintkRecord]:
    """Records whose level/facility is in the given sets (records whose level or facility the
    layout does not give are dropped when filtering on it), then the last ``tail`` of them."""
    lv = None if levels is None else set(levels)
    fc = None if facilities is None else set(facilities)
    out = [r for r in records
           if (lv is None or r.level in lv) and (fc is None or r.facility in fc)]
    if tail is not None:
        if tail < 0:
            raise UsageError("tail must not be negative")
        out = out[len(out) - tail:] if tail else []
    return out


def _records(log: PrintkLog | Iterable[PrintkRecord]) -> Iterable[PrintkRecord]:
    return log.records if isinstance(log, PrintkLog) else log


def format_dmesg(log: PrintkLog | Iterable[PrintkRecord], *, caller: bool = False,
                 levels: Iterable[int] | None = None, facilities: Iterable[int] | None = None,
                 tail: int | None = None, style: str = "makedumpfile") -> bytes:
    """The log as ``makedumpfile --dump-dmesg`` writes it (see the module docstring);
    ``caller=True`` adds makedumpfile 1.7.5's ``[    T123] `` field.

    ``style="vmcore-dmesg"`` writes what kexec-tools' ``vmcore-dmesg`` (2.0.25) does instead: no
    indentation after a newline in the text, ``\\xNN`` escapes of the unsigned byte, and a bare
    timestamp line for an empty (data-less) record.  (It also prints a bare line for a record
    whose text was lost, ``FAILED_LPOS``, which is a counted warning here rather than a record,
    and a ``[    0.000000] `` line for the structured buffer's wrap marker; neither is imitated.)
    """
    if style not in _ESCAPE:
        raise UsageError(f"style is one of {', '.join(STYLES)}, not {style!r}")
    out = []
    for rec in select_records(_records(log), levels=levels, facilities=facilities, tail=tail):
        if rec.raw is not None:
            out.append(rec.raw)
        elif not rec.dataless or style == "vmcore-dmesg":
            out.append(_format_record(rec, caller, style))
    return b"".join(out)


def format_json_lines(log: PrintkLog | Iterable[PrintkRecord], *, levels: Iterable[int] | None = None,
                      facilities: Iterable[int] | None = None, tail: int | None = None) -> bytes:
    """One JSON object per record (:meth:`PrintkRecord.to_dict`), newline-terminated."""
    recs = select_records(_records(log), levels=levels, facilities=facilities, tail=tail)
    return b"".join(json.dumps(r.to_dict()).encode() + b"\n" for r in recs)


def print_dmesg(log: PrintkLog | Sequence[PrintkRecord], file: BinaryIO | None = None, *,
                json_lines: bool = False, **options: Any) -> None:
    """Write :func:`format_dmesg` (or :func:`format_json_lines`) output to ``file``
    (default: standard output)."""
    out = file if file is not None else sys.stdout.buffer
    out.write(format_json_lines(log, **options) if json_lines else format_dmesg(log, **options))
