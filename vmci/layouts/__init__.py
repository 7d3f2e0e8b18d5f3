"""Binary layouts, one construct declaration per format, shared by readers and writers.

:func:`struct_format` derives a :mod:`struct` format string from a flat construct ``Struct``
of fixed-size integer and byte fields, so hot loops (page descriptors, program headers) can
use ``struct.iter_unpack`` while the declaration stays the single source of truth;
:func:`numpy_dtype` derives a numpy structured dtype from the same declaration, for tables
processed whole (a kdump file's page descriptors).
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any

_INT_CODES = {
    (1, False): "B",
    (1, True): "b",
    (2, False): "H",
    (2, True): "h",
    (4, False): "I",
    (4, True): "i",
    (8, False): "Q",
    (8, True): "q",
}


def _code(sub: Any) -> tuple[str, str | None]:
    """struct code and byte order ('<', '>' or None) of one construct field."""
    import construct as cs

    while isinstance(sub, cs.Renamed):
        sub = sub.subcon
    if isinstance(sub, cs.FormatField):
        order, code = sub.fmtstr[0], sub.fmtstr[1:]
        return code, order
    if isinstance(sub, cs.BytesInteger):
        return _INT_CODES[(sub.length, sub.signed)], "<" if sub.swapped else ">"
    if isinstance(sub, cs.Padded) and sub.subcon is cs.Pass:
        return f"{sub.sizeof()}x", None
    if isinstance(sub, cs.Bytes | cs.StringEncoded | cs.Padded):
        return f"{sub.sizeof()}s", None
    if isinstance(sub, cs.Const):
        return _code(sub.subcon)
    raise TypeError(f"no struct code for {sub!r}")


def struct_format(decl: Any) -> struct.Struct:
    """A ``struct.Struct`` equivalent to a flat construct ``Struct`` declaration."""
    import construct as cs

    while isinstance(decl, cs.Renamed):
        decl = decl.subcon
    if not isinstance(decl, cs.Struct):
        raise TypeError("struct_format needs a construct Struct")
    order = None
    codes = []
    for sub in decl.subcons:
        code, o = _code(sub)
        if o is not None:
            if order not in (None, o):
                raise TypeError("mixed byte order in one declaration")
            order = o
        codes.append(code)
    fmt = struct.Struct((order or "<") + "".join(codes))
    if fmt.size != decl.sizeof():
        raise TypeError(f"struct size {fmt.size} != construct size {decl.sizeof()}")
    return fmt


def field_names(decl: Any) -> list[str]:
    """Names of the fields of a flat ``Struct`` that carry values (no padding)."""
    import construct as cs

    while isinstance(decl, cs.Renamed):
        decl = decl.subcon
    return [s.name for s in decl.subcons if s.name]


@cache
def numpy_dtype(decl: Any) -> Any:
    """A numpy structured ``dtype`` equivalent to a flat construct ``Struct`` of integer fields
    (padding allowed): the same names, offsets, sizes, signedness and byte order.  Cached per
    declaration (declarations are module-level constants): deriving it costs ~0.25 ms, once per
    kdump walk otherwise."""
    import numpy as np

    fmt = struct_format(decl)  # checks the declaration is flat and of one byte order
    order = fmt.format[0]
    import construct as cs

    while isinstance(decl, cs.Renamed):
        decl = decl.subcon
    names: list[str] = []
    formats: list[str] = []
    offsets: list[int] = []
    pos = 0
    for sub in decl.subcons:
        code, _ = _code(sub)
        size = struct.calcsize("<" + code)
        if sub.name and not code.endswith("x"):
            if code.endswith("s"):
                formats.append(f"S{size}")
            else:
                kind = "i" if code.islower() else "u"
                formats.append(f"{order}{kind}{size}")
            names.append(sub.name)
            offsets.append(pos)
        pos += size
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": fmt.size})
    if dtype.itemsize != fmt.size:
        raise TypeError(f"dtype size {dtype.itemsize} != construct size {fmt.size}")
    return dtype
