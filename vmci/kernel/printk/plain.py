"""The plain text ``log_buf`` of kernels before 3.5: a character ring written up to ``log_end``,
split into lines as ``vprintk()`` emitted them."""

from __future__ import annotations

import re

from vmci.errors import VmciError
from vmci.kernel.printk.memory import Region, read_uint
from vmci.kernel.printk.records import (
    MAX_PLAIN_BITS,
    NSEC,
    KernelReader,
    PrintkLog,
    PrintkRecord,
    ReadOptions,
    Warnings,
)

_PLAIN_LINE = re.compile(rb"(?:<(\d)>)?(?:\[ *(\d+)\.(\d{6})\] )?(.*?)(\n?)\Z", re.S)



def _plain_records(text: bytes) -> list[PrintkRecord]:
    """Split the raw buffer into lines: ``<N>`` level prefix and ``[%5lu.%06lu] `` timestamp
    (``CONFIG_PRINTK_TIME``) as ``vprintk()`` emitted them."""
    out = []
    for line in re.findall(rb"[^\n]*\n|[^\n]+\Z", text):
        m = _PLAIN_LINE.match(line)
        assert m is not None
        level, sec, usec, body, _ = m.groups()
        ts = int(sec) * NSEC + int(usec) * 1000 if sec is not None else None
        out.append(PrintkRecord(None, ts, body, int(level) if level is not None else None, raw=line))
    return out


def read_plain(kmem: KernelReader, opts: ReadOptions) -> PrintkLog:
    warn = Warnings()
    try:
        log_buf = read_uint(kmem, kmem.symbol("log_buf") or 0, kmem.pointer_size)
        # log_end is unsigned long up to 2.6.24, unsigned since 2.6.25: the low 32 bits either way
        # on little-endian machines
        log_end = read_uint(kmem, kmem.symbol("log_end") or 0, 4)
        buf_len = read_uint(kmem, kmem.symbol("log_buf_len") or 0, 4)
        chars_sym = kmem.symbol("logged_chars")
        logged = read_uint(kmem, chars_sym, 4) if opts.since_clear and chars_sym is not None else None
    except VmciError as e:
        warn("unreadable", f"a log_buf variable is not in the dump ({e})")
        return PrintkLog("plain", (), warn.freeze())
    if not 0 < buf_len <= 1 << MAX_PLAIN_BITS or buf_len & (buf_len - 1):
        warn("bad-ring", f"log_buf_len {buf_len} is not a power of two up to 2^{MAX_PLAIN_BITS}")
        return PrintkLog("plain", (), warn.freeze(), ring=log_buf)
    region = Region(kmem, log_buf, buf_len)
    if log_end < buf_len:
        spans = [(0, log_end)]
    else:
        cut = log_end & (buf_len - 1)
        spans = [(cut, buf_len - cut), (0, cut)]
    parts = []
    for off, n in spans:
        chunk = region.get(off, n)
        if chunk is None:  # keep what the dump holds, page by page
            warn("unreadable", f"part of log_buf+{off:#x}..+{off + n:#x} is not in the dump")
            chunk = region.readable(off, n)
        parts.append(chunk)
    text = b"".join(parts)
    if opts.since_clear:
        if logged is None:
            warn("no-clear-idx", "the VMCOREINFO has no SYMBOL(logged_chars); printing the whole log")
        else:
            text = text[len(text) - min(logged, len(text)):]
    return PrintkLog("plain", tuple(_plain_records(text)), warn.freeze(),
                     since_clear=opts.since_clear and logged is not None, ring=log_buf)
