"""Integers and sizes as people type them: one parser for the command line and scenario files.

Accepted, case-insensitive, ``_`` allowed between digits:

* decimal ``268435456`` or hexadecimal ``0x10000000``;
* a binary unit after the number: ``K``, ``M``, ``G``, ``T`` (powers of 1024), optionally followed
  by ``B`` or ``iB``: ``256M``, ``16GiB``, ``0x10M``;
* a bare ``B`` after a decimal number: ``512B``.  After hexadecimal digits a ``B`` is a digit
  (``0x1B`` is 27).

:func:`parse_int` is the command line's front door (its messages name the option), and
:func:`parse_size` the scenario's (it also takes an ``int`` as is).
"""

from __future__ import annotations

from vmci.errors import UsageError

__all__ = ["UNITS", "parse_int", "parse_size"]

#: Unit letter -> shift (powers of 1024).
UNITS = {"k": 10, "m": 20, "g": 30, "t": 40}


def _value(text: str) -> int | None:
    """``text`` in any accepted syntax, or ``None``."""
    t = text.strip().lower().replace("_", "")
    for tail in ("ib", "b"):
        if t.endswith(tail) and t[: -len(tail)][-1:] in UNITS:
            t = t[: -len(tail)]
            break
    shift = 0
    if t[-1:] in UNITS:
        shift, t = UNITS[t[-1]], t[:-1]
    elif t.endswith("b") and not t.startswith(("0x", "-0x")):
        t = t[:-1]
    try:
        return int(t, 0) << shift
    except ValueError:
        return None


def parse_int(text: str, what: str) -> int:
    """A non-negative integer from ``text`` (see the module docstring); ``what`` names it in errors."""
    value = _value(text)
    if value is None:
        raise UsageError(f"{what} must be an integer (decimal or 0x-hex), not {text!r}")
    if value < 0:
        raise UsageError(f"{what} must not be negative")
    return value


def parse_size(value: int | str) -> int:
    """A size in bytes: an ``int`` as is, or a string such as ``"256M"`` or ``"16GiB"``."""
    if isinstance(value, int):
        return value
    n = _value(value) if isinstance(value, str) else None
    if n is None:
        raise UsageError(f"not a size: {value!r} (use e.g. 268435456, '256M', '16G')")
    return n
