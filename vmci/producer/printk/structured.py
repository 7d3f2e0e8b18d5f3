"""The structured ``log_buf`` of Linux 3.5-5.9, written as ``log_store()`` writes it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from vmci.core.memory import PAGE_SIZE, Range, SparseMemory
from vmci.kernel.printk import PrintkRecord
from vmci.layouts.printk import (
    StructuredLayout,
)
from vmci.producer.printk.records import LogRecord, PrintkTruth, expected, meta_bytes
from vmci.producer.printk.target import PrintkTarget


def _dict(rec: LogRecord) -> bytes:
    """The record dictionary ``dev_printk_emit()`` attaches to a device message."""
    if not (rec.subsystem or rec.device):
        return b""
    return b"SUBSYSTEM=" + rec.subsystem.encode() + b"\0DEVICE=" + rec.device.encode()


class _Structured:
    """``log_buf`` with ``log_first_idx``/``log_next_idx``/``clear_idx`` as ``log_store()``
    maintains them."""

    def __init__(self, L: StructuredLayout, buf_len: int, align: int) -> None:
        self.L, self.len, self.align = L, buf_len, align
        self.buf = bytearray(buf_len)
        self.first_idx = self.next_idx = self.clear_idx = 0
        self.first_seq = self.next_seq = self.clear_seq = 0
        self.live: deque[tuple[int, int, int]] = deque()  # (idx, seq, record index)

    def _len_at(self, idx: int) -> int:
        return int.from_bytes(self.buf[idx + self.L.len:idx + self.L.len + 2], self.L.byteorder)  # type: ignore[arg-type]

    def _log_next(self, idx: int) -> int:
        n = self._len_at(idx)
        return self._len_at(0) if n == 0 else idx + n

    def _has_space(self, size: int, empty: bool) -> bool:
        if self.next_idx > self.first_idx or empty:
            free = max(self.len - self.next_idx, self.first_idx)
        else:
            free = self.first_idx - self.next_idx
        return free >= size + self.L.size

    def clear(self) -> None:
        """``dmesg -C`` (``SYSLOG_ACTION_CLEAR``)."""
        self.clear_seq, self.clear_idx = self.next_seq, self.next_idx

    def store(self, rec: LogRecord, index: int) -> bool:
        """``log_store()``; False when the record does not fit even in an empty buffer."""
        L = self.L
        dict_b = _dict(rec) if L.dict_len is not None else b""
        size = L.size + len(rec.text) + len(dict_b)
        size += -size & (self.align - 1)
        while self.first_seq < self.next_seq and not self._has_space(size, False):  # log_make_free_space()
            self.first_idx = self._log_next(self.first_idx)
            self.first_seq += 1
            self.live.popleft()
        if self.clear_seq < self.first_seq:
            self.clear_seq, self.clear_idx = self.first_seq, self.first_idx
        if not self._has_space(size, self.first_seq == self.next_seq):
            return False
        if self.next_idx + size + L.size > self.len:  # an empty header marks the wrap
            self.buf[self.next_idx:self.next_idx + L.size] = bytes(L.size)
            self.next_idx = 0
        bo = L.byteorder

        def num(v: int, n: int) -> bytes:
            return v.to_bytes(n, bo)  # type: ignore[arg-type]

        hdr = bytearray(L.size)
        hdr[L.ts_nsec:L.ts_nsec + 8] = num(rec.ts_nsec, 8)
        hdr[L.len:L.len + 2] = num(size, 2)
        hdr[L.text_len:L.text_len + 2] = num(len(rec.text), 2)
        if L.dict_len is not None:
            hdr[L.dict_len:L.dict_len + 2] = num(len(dict_b), 2)
        if L.meta is not None:
            hdr[L.meta:L.meta + 2] = meta_bytes(rec, bo)
        if L.caller_id is not None:
            hdr[L.caller_id:L.caller_id + 4] = num(rec.caller_id, 4)
        self.buf[self.next_idx:self.next_idx + size] = (bytes(hdr) + rec.text + dict_b).ljust(size, b"\0")
        self.live.append((self.next_idx, self.next_seq, index))
        self.next_idx += size
        self.next_seq += 1
        return True


def write_structured(mem: SparseMemory, t: PrintkTarget, records: Sequence[LogRecord], faults: set[str],
                      alloc: Callable[..., int], ring_bits: int, clear_after: int | None) -> PrintkTruth:
    L = StructuredLayout.from_lookup(t.lookup, word=t.pointer_size, byteorder=t.byteorder)
    log = _Structured(L, 1 << ring_bits, t.log_align)
    truth = PrintkTruth("structured", [], written=len(records))
    for n, rec in enumerate(records):
        if clear_after == n:
            log.clear()
        log.store(rec, n)
    if clear_after is not None and clear_after >= len(records):
        log.clear()
    live = list(log.live)
    chain_end = len(live)  # records a reader can reach by walking the chain
    if "corrupt-len" in faults:
        # a len of 0 (a false wrap marker) on a record after the one at offset 0 sends the walk
        # back to offset 0, which it has seen: a cycle, and the walk stops before this record
        at_zero = next((k for k, (idx, _, _) in enumerate(live) if idx == 0), None)
        if at_zero is not None and at_zero + 1 < len(live):
            k = (at_zero + 1 + len(live)) // 2
            idx = live[k][0]
            log.buf[idx + L.len:idx + L.len + 2] = bytes(2)
            chain_end = k
            truth.damaged["corrupt-len"] = len(live) - k
    log_buf = alloc(log.len, PAGE_SIZE, what="log_buf")
    mem.write(log_buf, bytes(log.buf))
    w, bo, sym = t.pointer_size, t.byteorder, t.symbols
    for name, value, n in (("log_buf", t.direct_map + log_buf, w), ("log_buf_len", log.len, 4),
                           ("log_first_idx", log.first_idx, 4), ("log_next_idx", log.next_idx, 4),
                           ("clear_idx", log.clear_idx, 4)):
        if name in sym:
            mem.write(t.image_paddr(sym[name]), value.to_bytes(n, bo))  # type: ignore[arg-type]
    truth.addresses.update(log_buf=t.direct_map + log_buf)
    hole_off: int | None = None  # offset in log_buf where the missing page starts
    if "truncated" in faults:
        last = (log_buf + log.len - 1) // PAGE_SIZE * PAGE_SIZE
        truth.holes = [Range(last, log_buf + log.len - last)]
        hole_off = last - log_buf
    caller, meta = L.caller_id is not None, L.meta is not None
    kept: list[tuple[int, PrintkRecord]] = []
    for k, (idx, seq, ri) in enumerate(live[:chain_end]):
        if hole_off is not None:
            if idx + L.size > hole_off:  # the header is gone: the walk cannot go on
                truth.damaged["truncated"] = chain_end - k
                break
            body = len(records[ri].text) + (len(_dict(records[ri])) if L.dict_len is not None else 0)
            if idx + L.size + body > hole_off:
                truth.damaged["truncated"] = truth.damaged.get("truncated", 0) + 1
                continue
        kept.append((seq, expected(records[ri], None, dev_info=False, caller=caller, meta=meta)))
        truth.spans.append((-1, idx, log._len_at(idx) or L.size))
    truth.records = [r for _, r in kept]
    truth.overwritten = len(records) - len(live)
    if clear_after is not None:
        truth.clear_seq = log.clear_seq
        truth.since_clear = [r for seq, r in kept if seq >= log.clear_seq]
    return truth
