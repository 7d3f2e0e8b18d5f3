"""The plain character ring of kernels before 3.5, written as ``emit_log_char()`` did."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vmci.core.memory import PAGE_SIZE, Range, SparseMemory
from vmci.kernel.printk import PrintkRecord
from vmci.producer.printk.records import LogRecord, PrintkTruth
from vmci.producer.printk.target import PrintkTarget


def _plain_lines(rec: LogRecord) -> list[bytes]:
    """What ``vprintk()`` emitted for ``rec``: every line with its own ``<level>`` and timestamp."""
    sec, nsec = divmod(rec.ts_nsec, 1_000_000_000)
    prefix = b"<%d>[%5d.%06d] " % (rec.level, sec, nsec // 1000)
    return [prefix + line + b"\n" for line in rec.text.split(b"\n")]


def write_plain(mem: SparseMemory, t: PrintkTarget, records: Sequence[LogRecord], faults: set[str],
                 alloc: Callable[..., int], ring_bits: int, clear_after: int | None) -> PrintkTruth:
    buf_len = 1 << ring_bits
    lines: list[tuple[int, LogRecord, bytes]] = []  # (message index, message, one line)
    for n, rec in enumerate(records):
        lines += [(n, rec, line) for line in _plain_lines(rec)]
    stream = b"".join(line for _, _, line in lines)
    log_end = len(stream)
    buf = bytearray(buf_len)
    start = max(0, log_end - buf_len)
    for i in range(start, log_end):  # emit_log_char()
        buf[i & (buf_len - 1)] = stream[i]
    since = sum(len(line) for n, _, line in lines if clear_after is not None and n >= clear_after) \
        if clear_after is not None else log_end
    logged = min(since, buf_len)
    bo, w, sym = t.byteorder, t.pointer_size, t.symbols
    log_buf = alloc(buf_len, PAGE_SIZE, what="log_buf")
    mem.write(log_buf, bytes(buf))
    for name, value, n in (("log_buf", t.direct_map + log_buf, w), ("log_end", log_end, 4),
                           ("log_buf_len", buf_len, 4), ("logged_chars", logged, 4)):
        mem.write(t.image_paddr(sym[name]), value.to_bytes(n, bo))  # type: ignore[arg-type]
    lost = range(0)
    holes = []
    if "truncated" in faults and buf_len >= 2 * PAGE_SIZE:
        lost = range(buf_len - PAGE_SIZE, buf_len)  # buffer offsets in the missing page
        holes = [Range(log_buf + buf_len - PAGE_SIZE, PAGE_SIZE)]
    kept = bytes(stream[i] for i in range(start, log_end) if (i & (buf_len - 1)) not in lost)
    truth = PrintkTruth("plain", [], written=len(records), plain_text=kept, holes=holes)
    truth.addresses.update(log_buf=t.direct_map + log_buf)

    def lines_from(cut: int) -> list[PrintkRecord]:
        """The lines of the stream from byte ``cut`` on; the one ``cut`` splits is a fragment."""
        out, pos = [], 0
        for _, rec, line in lines:
            span = range(pos, pos + len(line))
            pos += len(line)
            if span.stop <= cut:
                continue
            if lost and any((i & (buf_len - 1)) in lost for i in span):
                continue
            if span.start < cut:  # no <level> and timestamp left: a bare fragment
                frag = line[cut - span.start:]
                out.append(PrintkRecord(None, None, frag[:-1], None, raw=frag))
            else:
                text = line.split(b"] ", 1)[1][:-1]
                out.append(PrintkRecord(None, rec.ts_nsec // 1000 * 1000, text, rec.level, raw=line))
        return out

    truth.records = lines_from(start)
    starts = [0]
    for _, _, line in lines:
        starts.append(starts[-1] + len(line))
    truth.overwritten = len({n for (n, _, _), at in zip(lines, starts[:-1], strict=True) if at < start})
    if lost:
        truth.damaged["truncated"] = sum(1 for (_, _, line), at in zip(lines, starts[:-1], strict=True)
                                         if at >= start and any((i & (buf_len - 1)) in lost
                                                                for i in range(at, at + len(line))))
    if clear_after is not None:
        truth.clear_seq = clear_after
        truth.since_clear = lines_from(max(start, log_end - logged))
    return truth
