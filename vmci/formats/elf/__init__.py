"""ELF core dumps: ``reader`` (:func:`read_elf`, :class:`ElfMemory`) and ``writer``
(:func:`write_elf`).  The names below load their module on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmci.formats.elf.reader import ElfMemory, read_elf
    from vmci.formats.elf.writer import write_elf

_LAZY = {"ElfMemory": "reader", "read_elf": "reader", "write_elf": "writer"}
__all__ = ["ElfMemory", "read_elf", "write_elf"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
