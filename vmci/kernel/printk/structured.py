"""The structured ``log_buf`` of Linux 3.5-5.9: ``struct printk_log`` records (``struct log``
before 3.11) from ``log_first_idx`` to ``log_next_idx``, ``len == 0`` marking the wrap."""

from __future__ import annotations

from vmci.errors import VmciError
from vmci.kernel.printk.memory import Region, int_at, lookup, read_uint, record_meta, split_caller
from vmci.kernel.printk.records import (
    MAX_SIZE_BITS,
    KernelReader,
    PrintkLog,
    PrintkRecord,
    ReadOptions,
    Warnings,
)
from vmci.layouts.printk import StructuredLayout

_DICT_KEYS = {b"SUBSYSTEM": "subsystem", b"DEVICE": "device"}


def _dict_fields(raw: bytes) -> dict[str, str]:
    out = {}
    for item in raw.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq and key in _DICT_KEYS:
            out[_DICT_KEYS[key]] = value.decode("utf-8", "backslashreplace")
    return out


def read_structured(kmem: KernelReader, opts: ReadOptions) -> PrintkLog:
    L = StructuredLayout.from_lookup(lookup(kmem), word=kmem.pointer_size, byteorder=kmem.byteorder)
    warn = Warnings()
    bo, w = L.byteorder, L.word
    names = ("log_buf", "log_buf_len", "log_first_idx", "log_next_idx", "clear_idx")
    syms = {n: kmem.symbol(n) for n in names}
    first_sym = syms["log_first_idx"]
    since_clear = False
    if opts.since_clear:
        if syms["clear_idx"] is None:
            warn("no-clear-idx", "the VMCOREINFO has no SYMBOL(clear_idx); printing the whole log")
        else:
            first_sym, since_clear = syms["clear_idx"], True
    try:
        log_buf = read_uint(kmem, syms["log_buf"] or 0, w)
        buf_len = read_uint(kmem, syms["log_buf_len"] or 0, 4)
        first = read_uint(kmem, first_sym or 0, 4)
        next_idx = read_uint(kmem, syms["log_next_idx"] or 0, 4)
    except VmciError as e:
        warn("unreadable", f"a log_buf variable is not in the dump ({e})")
        return PrintkLog("structured", (), warn.freeze(), since_clear=since_clear)
    if not L.size <= buf_len <= 1 << MAX_SIZE_BITS:
        warn("bad-ring", f"log_buf_len {buf_len} is impossible")
        return PrintkLog("structured", (), warn.freeze(), since_clear=since_clear, ring=log_buf)
    region = Region(kmem, log_buf, buf_len)
    records: list[PrintkRecord] = []
    seen: set[int] = set()
    idx = first
    while idx != next_idx:
        if idx > buf_len - L.size:
            warn("out-of-bounds", f"record index {idx:#x} is outside the {buf_len}-byte log_buf")
            break
        hdr = region.get(idx, L.size)
        if hdr is None:
            warn("unreadable", f"the record at log_buf+{idx:#x} is not in the dump")
            break
        at, msglen = idx, int_at(hdr, L.len, 2, bo)
        if msglen == 0:  # the wrap marker: the record is at offset 0
            at = 0
            hdr = region.get(0, L.size)
            if hdr is None:
                warn("unreadable", "the record at log_buf+0 is not in the dump")
                break
            msglen = int_at(hdr, L.len, 2, bo)
        if at in seen:
            warn("cycle", f"the record chain returns to log_buf+{at:#x}: log_buf is damaged")
            break
        seen.add(at)
        if msglen < L.size:
            warn("bad-len", f"the record at log_buf+{at:#x} has len {msglen}, shorter than its header")
            break
        rec = _structured_record(region, L, hdr, at, msglen, warn)
        if rec is not None:
            records.append(rec)
        idx = at + msglen
    return PrintkLog("structured", tuple(records), warn.freeze(), since_clear=since_clear, ring=log_buf)


def _structured_record(region: Region, L: StructuredLayout, hdr: bytes, at: int, msglen: int,
                       warn: Warnings) -> PrintkRecord | None:
    bo = L.byteorder
    text_len = int_at(hdr, L.text_len, 2, bo)
    dict_len = 0 if L.dict_len is None else int_at(hdr, L.dict_len, 2, bo)
    room = msglen - L.size
    if text_len > room:
        warn("text-truncated", f"the record at log_buf+{at:#x}: text_len {text_len} exceeds its len")
        text_len, dict_len = room, 0
    dict_len = min(dict_len, room - text_len)
    body = region.get(at + L.size, text_len + dict_len)
    if body is None:
        warn("unreadable", f"the text of the record at log_buf+{at:#x} is not in the dump")
        return None
    facility, flags, level = record_meta(hdr, L.meta, bo)
    tid, cpu = split_caller(None if L.caller_id is None else int_at(hdr, L.caller_id, 4, bo))
    d = _dict_fields(body[text_len:])
    return PrintkRecord(None, int_at(hdr, L.ts_nsec, 8, bo), body[:text_len], level, facility, flags,
                        tid, cpu, d.get("subsystem"), d.get("device"))
