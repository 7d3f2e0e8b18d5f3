"""kdump-compressed dumps (makedumpfile, QEMU ``kdump-*``): reader, writer and split sets.

``header`` (parsing, ABI sniffing), ``bitmap``, ``memory`` (:class:`KdumpMemory`), ``reader``
(:func:`read_kdump`), ``writer`` (:func:`write_kdump`), ``splitset`` (:func:`open_kdump_set`).
The names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmci.formats.kdump.bitmap import PfnBitmap
    from vmci.formats.kdump.memory import KdumpMemory
    from vmci.formats.kdump.reader import read_kdump
    from vmci.formats.kdump.splitset import open_kdump_set
    from vmci.formats.kdump.writer import write_kdump

_LAZY = {
    "PfnBitmap": "bitmap",
    "KdumpMemory": "memory",
    "read_kdump": "reader",
    "open_kdump_set": "splitset",
    "write_kdump": "writer",
}
__all__ = ["KdumpMemory", "PfnBitmap", "open_kdump_set", "read_kdump", "write_kdump"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
