"""Conversion: any dump vmci reads, to a kdump or ELF file that crash, drgn, libkdumpfile and
makedumpfile open, with makedumpfile's page filtering.

:func:`convert` (:mod:`vmci.convert.api`) is the entry point; :mod:`vmci.convert.filters` holds
the page filters (dump-level bits), :mod:`vmci.convert.source` what the output carries besides
pages, :mod:`vmci.convert.to_kdump` and :mod:`vmci.convert.to_elf` the targets.
"""

from __future__ import annotations

from vmci.convert.api import COMPRESSIONS, TARGETS, ConvertResult, convert, output_paths

__all__ = ["COMPRESSIONS", "TARGETS", "ConvertResult", "convert", "output_paths"]
