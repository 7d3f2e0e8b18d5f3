"""Kernel log buffer
-----------------

The kernel log read from guest memory with nothing but the VMCOREINFO: records, then formatted
output, then printing (the layering of drgn's ``drgn/helpers/linux/printk.py``; use
:func:`get_printk_records` and format the records yourself if :func:`format_dmesg` does not fit).

The log's layout is chosen by probing the VMCOREINFO keys, in this order (:data:`VARIANTS`):

``lockless``
    Linux 5.10+ (kernel commit 896fbe20b4e2 "printk: use the lockless ringbuffer"):
    ``SYMBOL(prb)`` is a pointer to the ring in use (``printk_rb_static`` at boot,
    ``printk_rb_dynamic`` once ``setup_log_buf()`` grew it).  Descriptor ids are visited from
    ``tail_id`` to ``head_id`` inclusive; a record is read only when its descriptor holds that
    id in the committed or finalized state, its text block's lpos values pass the kernel's own
    ``get_data()`` rules (aligned; regular, or wrapping to index 0; the newer "perfectly
    fitting block does not wrap" rule of 2025 included), and the data block's id word equals
    the descriptor id.  Data-less records (lpos bit 0 set) are an empty line when both lpos
    are ``EMPTY_LINE_LPOS``/``NO_LPOS`` (0x3), else lost data.  Both word sizes: the state is in
    the top two bits of the ``unsigned long`` ``state_var``.
``structured``
    Linux 3.5-5.9: ``struct printk_log`` (``struct log`` before 3.11) records in ``log_buf``
    from ``log_first_idx`` to ``log_next_idx``; ``len == 0`` marks the wrap to offset 0.
    A repeated index (a cycle), an index past ``log_buf_len`` or a ``len`` shorter than the
    header ends the walk with a warning.
``plain``
    before 3.5: the character ring ``log_buf`` of ``log_buf_len`` bytes, written up to the
    running counter ``log_end``.

Nothing in guest memory raises: corrupt, half-written or unreadable records are skipped and
counted in :attr:`PrintkLog.warnings`; every loop is bounded by the ring's sizes, which are
themselves clamped.  Only a VMCOREINFO without any log keys (:class:`~vmci.errors.NotFoundError`)
or with impossible offsets (:class:`~vmci.errors.FormatError`) raises.

Output format (``format_dmesg``), as makedumpfile's ``--dump-dmesg`` writes it
(``dump_log_entry()`` in ``makedumpfile.c`` for 3.5-5.9, ``dump_record()`` in ``printk.c`` for
5.10+; Debian's 1.7.2 and later):

* each record is ``"[%5llu.%06lu] "`` -- seconds and microseconds of ``ts_nsec``, truncated --
  then the text, then ``\\n``;
* with ``caller=True`` (makedumpfile 1.7.5+, commit 48bb1e0, always on when the VMCOREINFO has
  ``OFFSET(printk_info.caller_id)`` or ``OFFSET(printk_log.caller_id)``) the prefix gains
  ``"[%8s] "`` holding ``T<pid>`` or ``C<cpu>`` (bit 31 of ``caller_id``);
* a newline inside the text is followed by as many spaces as the prefix is long;
* a byte that C's ``isprint()`` and ``isspace()`` both reject (in the C locale: below 0x20
  except ``\\t\\n\\v\\f\\r``, 0x7f, and every byte from 0x80) is written as ``\\x%02x`` of the
  *signed* ``char``: ``\\x01``, ``\\x7f``, but ``\\xffffffe9`` for 0xe9;
* records without text data (both data-less kinds) are not written at all;
* the plain buffer (before 3.5) is written as its raw bytes, oldest first, without escapes.

``since_clear`` is makedumpfile's ``--partial-dmesg``: records from ``clear_seq`` on (read as a
``latched_seq`` when ``SIZE(latched_seq)`` exists), from ``clear_idx`` (structured), or the last
``logged_chars`` bytes (plain, which makedumpfile does not do).  This reader keeps the records
whose ``seq`` is not older than ``clear_seq``.  makedumpfile instead starts its walk at id
``head_id - head_id % count + clear_seq % count``, which is right only while ``clear_seq`` lies in
the head's current pass over the descriptor array: for an older ``clear_seq`` it drops records,
or starts past the head and walks the whole 2^62 id space (it hangs).

makedumpfile differs from this reader only on damaged rings -- it prints records whose data
block belongs to another descriptor, follows an unmasked or corrupt ``head_id`` without end,
and has no cycle check in the lockless walk -- and on blocks that end exactly at the end of the
data array, which Linux writes since the 2025 change "printk_ringbuffer: don't needlessly wrap
data blocks around" and which makedumpfile (taking ``begin > next`` as "wrapped") reads from
the start of the array instead.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmci.kernel.printk.format import (
        STYLES,
        format_dmesg,
        format_json_lines,
        print_dmesg,
        select_records,
    )
    from vmci.kernel.printk.records import KernelReader, LogVariant, PrintkLog, PrintkRecord, PrintkWarning
    from vmci.kernel.printk.variants import VARIANTS, get_printk_records, variant_for

__all__ = (
    "STYLES",
    "VARIANTS",
    "KernelReader",
    "LogVariant",
    "PrintkLog",
    "PrintkRecord",
    "PrintkWarning",
    "format_dmesg",
    "format_json_lines",
    "get_printk_records",
    "print_dmesg",
    "select_records",
    "variant_for",
)

#: Public name -> the module of this package that defines it, loaded on first use (PEP 562):
#: ``analyze`` asks :mod:`vmci.kernel.printk.probe` first and loads the readers only for a log.
_HOME = {
    **dict.fromkeys(("STYLES", "format_dmesg", "format_json_lines", "print_dmesg", "select_records"),
                    "format"),
    **dict.fromkeys(("KernelReader", "LogVariant", "PrintkLog", "PrintkRecord", "PrintkWarning"), "records"),
    **dict.fromkeys(("VARIANTS", "get_printk_records", "variant_for"), "variants"),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
