"""The log writer's input and its truth: the records the guest kernel logged
(:class:`LogRecord`), the faults it can suffer (:data:`FAULTS`), what the writer did
(:class:`PrintkTruth`) and the record a careful reader must return for each one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vmci.core.memory import Range
from vmci.kernel.printk import PrintkRecord
from vmci.layouts.printk import (
    CALLER_CPU,
    LOG_NEWLINE,
)

#: Fault name -> what it does and what a reader must say.
FAULTS: dict[str, str] = {
    "half-written": "the last record is still reserved at the panic: its descriptor in the "
                    "reserved state, half its text written (lockless; reader: 'reserved')",
    "reused-descriptor": "a record's descriptor in mid-ring was recycled by a racing writer: "
                         "it holds the id one wrap ahead, reserved (lockless; reader: 'id-mismatch')",
    "stuck-writer": "a CPU stopped in the middle of a record (an NMI, a panic elsewhere) while the "
                    "others kept logging: once the data ring comes round to it, new records lose "
                    "their text (FAILED_LPOS; reader: 'data-lost'), once the descriptor ring does, "
                    "they are dropped (the ring's fail counter); the stuck one is 'reserved' (lockless)",
    "corrupt-id": "the id word of a record's data block is damaged (lockless; makedumpfile still "
                  "prints the record, a careful reader drops it: 'data-id-mismatch')",
    "corrupt-len": "a record header's len is damaged so that the chain loops back "
                   "(structured; reader: 'cycle', the walk stops there)",
    "truncated": "the dump ends before the last pages of the log data (the truth lists the "
                 "physical ranges to leave out; reader: 'unreadable')",
}

VARIANT_FAULTS = {
    "lockless": {"half-written", "stuck-writer", "reused-descriptor", "corrupt-id", "truncated"},
    "structured": {"corrupt-len", "truncated"},
    "plain": {"truncated"},
}


@dataclass(frozen=True)
class LogRecord:
    """One message as the guest kernel logged it: the producer's input."""

    text: bytes
    ts_nsec: int
    level: int = 6
    facility: int = 0
    caller_id: int = 1
    """``printk_caller_id()``: the PID, or ``CALLER_CPU | cpu`` in interrupt context."""
    subsystem: str = ""
    device: str = ""
    flags: int = LOG_NEWLINE


@dataclass
class PrintkTruth:
    """What :func:`write_printk_log` did."""

    variant: str
    records: list[PrintkRecord]
    """The records a reader of the active ring must return, oldest first (plain: complete lines)."""
    static_records: list[PrintkRecord] = field(default_factory=list)
    """Lockless with a dynamic ring: what ``printk_rb_static`` still holds."""
    written: int = 0
    """Messages logged."""
    overwritten: int = 0
    """Messages the ring dropped to make room (normal wrapping)."""
    damaged: dict[str, int] = field(default_factory=dict)
    """Fault name -> records it destroyed (a reader must warn about each)."""
    clear_seq: int | None = None
    """The sequence number (lockless), or count of records (others), at the last clear."""
    since_clear: list[PrintkRecord] = field(default_factory=list)
    """The records a reader must return with ``since_clear``."""
    plain_text: bytes | None = None
    """Plain: the buffer's content, oldest byte first (makedumpfile's whole output)."""
    holes: list[Range] = field(default_factory=list)
    """Physical ranges a truncated dump must leave out (fault ``truncated``)."""
    addresses: dict[str, int] = field(default_factory=dict)
    """Where things are: ``ring``/``static_ring``/``descs``/``infos``/``data`` or ``log_buf``."""
    reusable: int = 0
    """Lockless: descriptors between tail and head that are reusable (their text overwritten)."""
    failed: int = 0
    """Lockless: messages the ring refused outright (its ``fail`` counter)."""
    vmcoreinfo_lines: list[str] = field(default_factory=list)
    """The printk lines of the VMCOREINFO for this target."""
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    """Per entry of :attr:`records`: (descriptor slot, offset, size) of the bytes it occupies --
    lockless: its data block in the text data array (size 0 when data-less); structured: the
    whole record in ``log_buf`` (slot -1)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant, "written": self.written, "overwritten": self.overwritten,
            "damaged": self.damaged, "clear_seq": self.clear_seq, "reusable": self.reusable,
            "records": [r.to_dict() for r in self.records],
            "holes": [[h.start, h.size] for h in self.holes], "addresses": self.addresses,
        }


def expected(rec: LogRecord, seq: int | None, *, dev_info: bool, caller: bool, meta: bool,
              dataless: bool = False) -> PrintkRecord:
    cid = rec.caller_id if caller else None
    return PrintkRecord(
        seq, rec.ts_nsec, rec.text,
        rec.level if meta else None, rec.facility if meta else None, rec.flags if meta else None,
        None if cid is None or cid & CALLER_CPU else cid,
        None if cid is None or not cid & CALLER_CPU else cid & ~CALLER_CPU,
        (rec.subsystem or None) if not dev_info else rec.subsystem,
        (rec.device or None) if not dev_info else rec.device,
        dataless)


def meta_bytes(rec: LogRecord, byteorder: str) -> bytes:
    """``u8 facility; u8 flags:5, level:3`` (bitfields from the low bit on little-endian GCC)."""
    if byteorder == "little":
        bits = rec.flags & 0x1F | (rec.level & 7) << 5
    else:
        bits = (rec.flags & 0x1F) << 3 | rec.level & 7
    return bytes([rec.facility & 0xFF, bits])
