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

import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple, Protocol

from vmci.errors import NotFoundError, UsageError, VmciError
from vmci.layouts.printk import (
    CALLER_CPU,
    DESC_COMMITTED,
    DESC_FINALIZED,
    DESC_RESERVED,
    DESC_REUSABLE,
    EMPTY_LINE_LPOS,
    LOG_CONT,
    LocklessLayout,
    Lookup,
    StructuredLayout,
)

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

#: Largest rings read: ``LOG_BUF_LEN_MAX`` is 2 GiB (``1 << 31``), and the kernel gives one
#: descriptor per 32 bytes.  Walks are capped further by ``max_descriptors``.
MAX_SIZE_BITS = 31
MAX_COUNT_BITS = MAX_SIZE_BITS - 5
#: The plain buffer is read whole: beyond 256 MiB (old kernels defaulted to at most 2 MiB) its
#: ``log_buf_len`` is taken as damaged.
MAX_PLAIN_BITS = 28
DEFAULT_MAX_DESCRIPTORS = 1 << 22
_PAGE = 4096
_CHUNK = 1 << 20
_NSEC = 1_000_000_000


class KernelReader(Protocol):
    """What the log readers need from a kernel's memory (``vmci.kernel.vmem.KernelMemory``
    provides it): virtual reads and the VMCOREINFO's typed values."""

    @property
    def pointer_size(self) -> int: ...

    @property
    def byteorder(self) -> str: ...

    def read(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at kernel virtual ``vaddr``; :class:`~vmci.errors.MemoryReadError`
        when any of it is not mapped or not in the dump."""
        ...

    def symbol(self, name: str) -> int | None: ...

    def offset(self, struct: str, member: str) -> int | None: ...

    def size(self, struct: str) -> int | None: ...

    def number(self, name: str) -> int | None: ...

    def length(self, name: str) -> int | None: ...


class PrintkRecord(NamedTuple):
    """Kernel log record."""

    seq: int | None
    """Sequence number (lockless ring only; the older layouts do not store it)."""
    ts_nsec: int | None
    """Timestamp in nanoseconds since boot (None for a plain-buffer line without one)."""
    text: bytes
    """Message text, without the trailing newline."""
    level: int | None = None
    """Log level 0-7, where the layout allows (not exported by the VMCOREINFO: inferred)."""
    facility: int | None = None
    """Syslog facility, where the layout allows (inferred, as ``level``)."""
    flags: int | None = None
    """Record flags (``LOG_NEWLINE`` 2, ``LOG_CONT`` 8), where the layout allows."""
    caller_tid: int | None = None
    """PID of the task that printed the record, when the caller id says a task."""
    caller_cpu: int | None = None
    """CPU that printed the record in interrupt context, when the caller id says a CPU."""
    subsystem: str | None = None
    """``dev_info`` (or dictionary ``SUBSYSTEM=``) of a device message; None when absent."""
    device: str | None = None
    """``dev_info`` (or dictionary ``DEVICE=``) of a device message; None when absent."""
    dataless: bool = False
    """The descriptor holds no data block (an empty line); makedumpfile prints nothing for it."""
    raw: bytes | None = None
    """Plain buffer only: the line's bytes exactly as the buffer holds them."""

    @property
    def caller(self) -> str | None:
        """``T<pid>`` or ``C<cpu>``, as the kernel's ``CONFIG_PRINTK_CALLER`` prefix shows it."""
        if self.caller_tid is not None:
            return f"T{self.caller_tid}"
        if self.caller_cpu is not None:
            return f"C{self.caller_cpu}"
        return None

    @property
    def continuation(self) -> bool | None:
        """The record continues the previous line (``LOG_CONT``), where flags are known."""
        return None if self.flags is None else bool(self.flags & LOG_CONT)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``text`` is UTF-8 with undecodable bytes as ``\\xNN``; then
        ``text_hex`` holds the exact bytes."""
        out: dict[str, Any] = {
            "seq": self.seq, "ts_nsec": self.ts_nsec,
            "text": self.text.decode("utf-8", "backslashreplace"),
            "level": self.level, "facility": self.facility, "flags": self.flags,
            "continuation": self.continuation, "caller": self.caller,
            "subsystem": self.subsystem, "device": self.device, "dataless": self.dataless,
        }
        try:
            self.text.decode("utf-8")
        except UnicodeDecodeError:
            out["text_hex"] = self.text.hex()
        return out


@dataclass(frozen=True)
class PrintkWarning:
    """Records passed over for one reason: a stable ``code``, how many, the first case."""

    code: str
    count: int
    message: str

    def __str__(self) -> str:
        times = f" ({self.count} times)" if self.count > 1 else ""
        return f"{self.code}: {self.message}{times}"


@dataclass(frozen=True)
class PrintkLog:
    """What :func:`get_printk_records` read."""

    variant: str
    """Which layout: ``lockless``, ``structured`` or ``plain`` (:data:`VARIANTS`)."""
    records: tuple[PrintkRecord, ...]
    """The records, oldest first."""
    warnings: tuple[PrintkWarning, ...] = ()
    """Why records were skipped or the walk stopped, counted by code."""
    reusable: int = 0
    """Lockless: descriptors between tail and head already recycled (their text overwritten
    by newer records); normal, skipped silently by the kernel and by makedumpfile too."""
    since_clear: bool = False
    """Only the records since the last ``dmesg -C`` (``clear_seq``/``clear_idx``/``logged_chars``)."""
    clear_seq: int | None = None
    """Lockless: the ``clear_seq`` value read (when ``since_clear``)."""
    ring: int | None = None
    """Address of the ring read: the ``printk_ringbuffer`` (lockless) or the ``log_buf`` data."""
    static_ring: bool = False
    """Lockless: the ring read is ``printk_rb_static`` (the boot ring)."""
    failed: int | None = None
    """Lockless: the ring's ``fail`` counter, messages the kernel could not store at all (no
    descriptor was free: a writer stuck in the middle of a record blocks the ring)."""

    @property
    def complete(self) -> bool:
        """No record was lost to damage, a half-written record or an unreadable page."""
        return not self.warnings


class _Warnings:
    def __init__(self) -> None:
        self._first: dict[str, str] = {}
        self._count: dict[str, int] = {}

    def __call__(self, code: str, message: str) -> None:
        if code not in self._first:
            self._first[code] = message
        self._count[code] = self._count.get(code, 0) + 1

    def freeze(self) -> tuple[PrintkWarning, ...]:
        return tuple(PrintkWarning(c, self._count[c], m) for c, m in self._first.items())


@dataclass(frozen=True)
class ReadOptions:
    """The options of :func:`get_printk_records`, as a variant's ``read`` receives them."""

    since_clear: bool = False
    ring: str = "active"
    max_descriptors: int = DEFAULT_MAX_DESCRIPTORS


@dataclass(frozen=True)
class LogVariant:
    """One log layout: ``applies`` probes the VMCOREINFO keys, ``read`` walks memory."""

    name: str
    description: str
    applies: Callable[[KernelReader], bool]
    read: Callable[[KernelReader, ReadOptions], PrintkLog]


# -- memory helpers ---------------------------------------------------------------------------


def _lookup(kmem: KernelReader) -> Lookup:
    def get(kind: str, name: str) -> int | None:
        if kind == "SIZE":
            return kmem.size(name)
        if kind == "LENGTH":
            return kmem.length(name)
        struct, _, member = name.partition(".")
        return kmem.offset(struct, member)

    return get


class _Region:
    """``size`` bytes of kernel memory at ``base``, read lazily in 1 MiB chunks; pages the dump
    cannot provide read as None, so one missing page loses only what lies in it.  (Any
    :class:`~vmci.errors.VmciError` of a read counts as "not in the dump": the addresses come
    from guest memory and may be anything.)"""

    def __init__(self, kmem: KernelReader, base: int, size: int) -> None:
        self.kmem, self.base = kmem, base
        self.size = max(0, min(size, (1 << 64) - base))  # nothing past the top of the address space
        self._pages: dict[int, bytes | None] = {}

    def _load(self, page: int) -> None:
        start = max(page * _PAGE // _CHUNK * _CHUNK, self.base)
        end = min((page * _PAGE // _CHUNK + 1) * _CHUNK, self.base + self.size)
        try:
            blob = self.kmem.read(start, end - start)
        except VmciError:
            blob = None
        va = start
        while va < end:
            nxt = min((va // _PAGE + 1) * _PAGE, end)
            if blob is not None:
                self._pages[va // _PAGE] = blob[va - start:nxt - start]
            else:
                try:
                    self._pages[va // _PAGE] = self.kmem.read(va, nxt - va)
                except VmciError:
                    self._pages[va // _PAGE] = None
            va = nxt

    def get(self, off: int, n: int) -> bytes | None:
        if off < 0 or n < 0 or off + n > self.size:
            return None
        if n == 0:
            return b""
        va = self.base + off
        parts = []
        for page in range(va // _PAGE, (va + n - 1) // _PAGE + 1):
            if page not in self._pages:
                self._load(page)
            data = self._pages[page]
            if data is None:
                return None
            pstart = max(page * _PAGE, self.base)
            lo = max(va, pstart) - pstart
            hi = min(va + n, page * _PAGE + _PAGE) - pstart
            parts.append(data[lo:hi])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readable(self, off: int, n: int) -> bytes:
        """The bytes of ``[off, off + n)`` the dump holds, missing pages left out."""
        out, end = [], min(off + n, self.size)
        while off < end:
            step = min(_PAGE - (self.base + off) % _PAGE, end - off)
            out.append(self.get(off, step) or b"")
            off += step
        return b"".join(out)


def _int(buf: bytes, off: int, n: int, byteorder: str) -> int:
    return int.from_bytes(buf[off:off + n], byteorder)  # type: ignore[arg-type]


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _meta(raw: bytes, off: int | None, byteorder: str) -> tuple[int | None, int | None, int | None]:
    """(facility, flags, level) from the two bytes at ``off``: ``u8 facility; u8 flags:5, level:3``
    (GCC allocates bitfields from the least significant bit on little-endian targets)."""
    if off is None:
        return None, None, None
    bits = raw[off + 1]
    if byteorder == "little":
        return raw[off], bits & 0x1F, bits >> 5
    return raw[off], bits >> 3, bits & 7


def _caller(cid: int | None) -> tuple[int | None, int | None]:
    if cid is None:
        return None, None
    if cid & CALLER_CPU:
        return None, cid & ~CALLER_CPU
    return cid, None


# -- lockless ring (5.10+) --------------------------------------------------------------------


class _Ring(NamedTuple):
    records: list[PrintkRecord]
    reusable: int = 0
    failed: int | None = None


def _read_ring(kmem: KernelReader, L: LocklessLayout, addr: int, opts: ReadOptions,
               warn: _Warnings) -> _Ring:
    """Walk one ``printk_ringbuffer`` at ``addr``."""
    w, bo = L.word, L.byteorder
    try:
        rb = kmem.read(addr, L.ring_size)
    except VmciError:
        warn("unreadable", f"the printk_ringbuffer at {addr:#x} is not in the dump")
        return _Ring([])
    failed = None if L.fail is None else _int(rb, L.fail + L.counter, w, bo)
    dr, tr = L.desc_ring, L.text_data_ring
    count_bits = _int(rb, dr + L.count_bits, 4, bo)
    size_bits = _int(rb, tr + L.size_bits, 4, bo)
    if not 1 <= size_bits <= MAX_SIZE_BITS or not 0 <= count_bits <= MAX_COUNT_BITS:
        warn("bad-ring", f"impossible ring geometry: {1 << min(count_bits, 64)} descriptors, "
                         f"2^{size_bits} text bytes")
        return _Ring([], 0, failed)
    if count_bits > size_bits:
        warn("bad-ring", f"2^{count_bits} descriptors for 2^{size_bits} text bytes; "
                         f"reading 2^{size_bits} of them")
        count_bits = size_bits
    descs = _int(rb, dr + L.descs, w, bo)
    infos = _int(rb, dr + L.infos, w, bo)
    head = _int(rb, dr + L.head_id + L.counter, w, bo)
    tail = _int(rb, dr + L.tail_id + L.counter, w, bo)
    data = _int(rb, tr + L.data, w, bo)
    count, size = 1 << count_bits, 1 << size_bits
    idm, shift, ulmask = L.id_mask, L.state_shift, (1 << 8 * w) - 1
    span = (head - tail) & idm
    if span >= count:
        warn("tail-head-span", f"tail id {tail:#x} is {span} ids behind head id {head:#x}, "
                               f"beyond the {count} descriptors; reading the newest {count}")
        span = count - 1
    if span >= opts.max_descriptors:
        warn("ring-clamped", f"{span + 1} descriptors; reading the newest {opts.max_descriptors}")
        span = opts.max_descriptors - 1
    tail = (head - span) & idm
    d_region = _Region(kmem, descs, count * L.desc_size)
    i_region = _Region(kmem, infos, count * L.info_size)
    t_region = _Region(kmem, data, size)
    sv_off = L.state_var + L.counter
    b_off, n_off = L.text_blk_lpos + L.lpos_begin, L.text_blk_lpos + L.lpos_next
    meta = L.meta
    records: list[PrintkRecord] = []
    reusable = 0
    for k in range(span + 1):
        did = (tail + k) & idm
        slot = did & (count - 1)
        desc = d_region.get(slot * L.desc_size, L.desc_size)
        if desc is None:
            warn("unreadable", f"descriptor {did:#x} (slot {slot}) is not in the dump")
            continue
        sv = _int(desc, sv_off, w, bo)
        state = sv >> shift
        if sv & idm != did:
            warn("id-mismatch", f"slot {slot} holds descriptor id {sv & idm:#x}, not {did:#x} "
                                "(recycled or damaged)")
            continue
        if state == DESC_REUSABLE:
            reusable += 1
            continue
        if state == DESC_RESERVED:
            warn("reserved", f"descriptor {did:#x} was still being written (reserved)")
            continue
        assert state in (DESC_COMMITTED, DESC_FINALIZED)
        info = i_region.get(slot * L.info_size, L.info_size)
        if info is None:
            warn("unreadable", f"printk_info of descriptor {did:#x} is not in the dump")
            continue
        seq = _int(info, L.seq, 8, bo)
        if seq & (count - 1) != slot:
            warn("seq-mismatch", f"descriptor {did:#x} in slot {slot} has seq {seq}")
        text_len = _int(info, L.text_len, 2, bo)
        begin, nxt = _int(desc, b_off, w, bo), _int(desc, n_off, w, bo)
        dataless = False
        if begin & 1 and nxt & 1:
            if begin != EMPTY_LINE_LPOS or nxt != EMPTY_LINE_LPOS:
                warn("data-lost", f"record seq {seq} has no text data (lpos {begin:#x})")
                continue
            text, dataless = b"", True
        else:
            text_or_none = _block_text(t_region, begin, nxt, did, text_len, w, bo, size_bits, ulmask,
                                       seq, warn)
            if text_or_none is None:
                continue
            text = text_or_none
        facility, flags, level = _meta(info, meta, bo)
        tid, cpu = _caller(None if L.caller_id is None else _int(info, L.caller_id, 4, bo))
        subsystem = device = None
        if L.dev_info is not None:
            if L.subsystem is not None:
                subsystem = _cstr(info[L.dev_info + L.subsystem:L.dev_info + L.subsystem + L.subsystem_len])
            if L.device is not None:
                device = _cstr(info[L.dev_info + L.device:L.dev_info + L.device + L.device_len])
        records.append(PrintkRecord(seq, _int(info, L.ts_nsec, 8, bo), text, level, facility, flags,
                                    tid, cpu, subsystem, device, dataless))
    return _Ring(records, reusable, failed)


def _block_text(t_region: _Region, begin: int, nxt: int, did: int, text_len: int, w: int, bo: str,
                size_bits: int, ulmask: int, seq: int, warn: _Warnings) -> bytes | None:
    """The text of the data block ``[begin, next)``, by the kernel's ``get_data()`` rules."""
    size = 1 << size_bits
    if (begin | nxt) & (w - 1):
        warn("bad-lpos", f"record seq {seq}: unaligned lpos {begin:#x}..{nxt:#x}")
        return None
    # "next - 1": a block that ends exactly at the end of the array lies in one wrap (the 2025
    # rule; older kernels wrapped such a block, which these tests also accept), and its next
    # may have overflowed to 0, hence the modular distance rather than begin < next
    wrap_end = ((nxt - 1) & ulmask) >> size_bits
    dist = (nxt - begin) & ulmask
    if begin >> size_bits == wrap_end and 0 < dist <= size:
        where, data_size = begin & (size - 1), dist
    elif ((begin + size) & ulmask) >> size_bits == wrap_end:
        where, data_size = 0, nxt & (size - 1)
    else:
        warn("bad-lpos", f"record seq {seq}: impossible lpos {begin:#x}..{nxt:#x}")
        return None
    if data_size < w:
        warn("bad-lpos", f"record seq {seq}: a {data_size}-byte block cannot hold its id")
        return None
    block = t_region.get(where, data_size)
    if block is None:
        warn("unreadable", f"the text of record seq {seq} is not in the dump")
        return None
    if _int(block, 0, w, bo) != did:
        warn("data-id-mismatch", f"record seq {seq}: its data block belongs to id "
                                 f"{_int(block, 0, w, bo):#x}, not {did:#x}")
        return None
    if text_len > data_size - w:
        warn("text-truncated", f"record seq {seq}: text_len {text_len} exceeds its "
                               f"{data_size - w}-byte block")
        text_len = data_size - w
    return block[w:w + text_len]


def _clear_seq(kmem: KernelReader, L: LocklessLayout, warn: _Warnings) -> int | None:
    """``clear_seq``: a u64 until about 5.13, then a ``struct latched_seq`` whose seqcount's
    low bit selects ``val[0]`` or ``val[1]``."""
    addr = kmem.symbol("clear_seq")
    if addr is None:
        warn("no-clear-seq", "the VMCOREINFO has no SYMBOL(clear_seq); printing the whole log")
        return None
    try:
        if L.latched_val is None:
            return _int(kmem.read(addr, 8), 0, 8, L.byteorder)
        latch = _int(kmem.read(addr, 4), 0, 4, L.byteorder)
        return _int(kmem.read(addr + L.latched_val + 8 * (latch & 1), 8), 0, 8, L.byteorder)
    except VmciError:
        warn("unreadable", f"clear_seq at {addr:#x} is not in the dump; printing the whole log")
        return None


def _read_lockless(kmem: KernelReader, opts: ReadOptions) -> PrintkLog:
    L = LocklessLayout.from_lookup(_lookup(kmem), word=kmem.pointer_size, byteorder=kmem.byteorder)
    warn = _Warnings()
    static = kmem.symbol("printk_rb_static")
    prb = kmem.symbol("prb")
    active: int | None = None
    if prb is not None:
        try:
            active = _int(kmem.read(prb, L.word), 0, L.word, L.byteorder)
        except VmciError:
            warn("unreadable", f"the prb pointer at {prb:#x} is not in the dump")
    if opts.ring == "static" or (active is None and static is not None):
        if static is None:
            raise NotFoundError("the VMCOREINFO has no SYMBOL(printk_rb_static)")
        active = static
    if active is None:
        return PrintkLog("lockless", (), warn.freeze())
    ring = _read_ring(kmem, L, active, opts, warn)
    records = ring.records
    if opts.ring == "both" and static is not None and static != active:
        early = _read_ring(kmem, L, static, opts, warn).records
        first = min((r.seq for r in records if r.seq is not None), default=None)
        records = [r for r in early if first is None or (r.seq is not None and r.seq < first)] + records
    clear = None
    if opts.since_clear:
        clear = _clear_seq(kmem, L, warn)
        if clear is not None:
            records = [r for r in records if r.seq is not None and r.seq >= clear]
    return PrintkLog("lockless", tuple(records), warn.freeze(), ring.reusable,
                     opts.since_clear and clear is not None, clear, active, active == static, ring.failed)


# -- structured log_buf (3.5-5.9) ---------------------------------------------------------------

_DICT_KEYS = {b"SUBSYSTEM": "subsystem", b"DEVICE": "device"}


def _dict_fields(raw: bytes) -> dict[str, str]:
    out = {}
    for item in raw.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq and key in _DICT_KEYS:
            out[_DICT_KEYS[key]] = value.decode("utf-8", "backslashreplace")
    return out


def _u(kmem: KernelReader, addr: int, n: int) -> int:
    return _int(kmem.read(addr, n), 0, n, kmem.byteorder)


def _read_structured(kmem: KernelReader, opts: ReadOptions) -> PrintkLog:
    L = StructuredLayout.from_lookup(_lookup(kmem), word=kmem.pointer_size, byteorder=kmem.byteorder)
    warn = _Warnings()
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
        log_buf = _u(kmem, syms["log_buf"] or 0, w)
        buf_len = _u(kmem, syms["log_buf_len"] or 0, 4)
        first = _u(kmem, first_sym or 0, 4)
        next_idx = _u(kmem, syms["log_next_idx"] or 0, 4)
    except VmciError as e:
        warn("unreadable", f"a log_buf variable is not in the dump ({e})")
        return PrintkLog("structured", (), warn.freeze(), since_clear=since_clear)
    if not L.size <= buf_len <= 1 << MAX_SIZE_BITS:
        warn("bad-ring", f"log_buf_len {buf_len} is impossible")
        return PrintkLog("structured", (), warn.freeze(), since_clear=since_clear, ring=log_buf)
    region = _Region(kmem, log_buf, buf_len)
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
        at, msglen = idx, _int(hdr, L.len, 2, bo)
        if msglen == 0:  # the wrap marker: the record is at offset 0
            at = 0
            hdr = region.get(0, L.size)
            if hdr is None:
                warn("unreadable", "the record at log_buf+0 is not in the dump")
                break
            msglen = _int(hdr, L.len, 2, bo)
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


def _structured_record(region: _Region, L: StructuredLayout, hdr: bytes, at: int, msglen: int,
                       warn: _Warnings) -> PrintkRecord | None:
    bo = L.byteorder
    text_len = _int(hdr, L.text_len, 2, bo)
    dict_len = 0 if L.dict_len is None else _int(hdr, L.dict_len, 2, bo)
    room = msglen - L.size
    if text_len > room:
        warn("text-truncated", f"the record at log_buf+{at:#x}: text_len {text_len} exceeds its len")
        text_len, dict_len = room, 0
    dict_len = min(dict_len, room - text_len)
    body = region.get(at + L.size, text_len + dict_len)
    if body is None:
        warn("unreadable", f"the text of the record at log_buf+{at:#x} is not in the dump")
        return None
    facility, flags, level = _meta(hdr, L.meta, bo)
    tid, cpu = _caller(None if L.caller_id is None else _int(hdr, L.caller_id, 4, bo))
    d = _dict_fields(body[text_len:])
    return PrintkRecord(None, _int(hdr, L.ts_nsec, 8, bo), body[:text_len], level, facility, flags, tid, cpu,
                        d.get("subsystem"), d.get("device"))


# -- plain text buffer (before 3.5) ---------------------------------------------------------------

_PLAIN_LINE = re.compile(rb"(?:<(\d)>)?(?:\[ *(\d+)\.(\d{6})\] )?(.*?)(\n?)\Z", re.S)


def _plain_records(text: bytes) -> list[PrintkRecord]:
    """Split the raw buffer into lines: ``<N>`` level prefix and ``[%5lu.%06lu] `` timestamp
    (``CONFIG_PRINTK_TIME``) as ``vprintk()`` emitted them."""
    out = []
    for line in re.findall(rb"[^\n]*\n|[^\n]+\Z", text):
        m = _PLAIN_LINE.match(line)
        assert m is not None
        level, sec, usec, body, _ = m.groups()
        ts = int(sec) * _NSEC + int(usec) * 1000 if sec is not None else None
        out.append(PrintkRecord(None, ts, body, int(level) if level is not None else None, raw=line))
    return out


def _read_plain(kmem: KernelReader, opts: ReadOptions) -> PrintkLog:
    warn = _Warnings()
    try:
        log_buf = _u(kmem, kmem.symbol("log_buf") or 0, kmem.pointer_size)
        # log_end is unsigned long up to 2.6.24, unsigned since 2.6.25: the low 32 bits either way
        # on little-endian machines
        log_end = _u(kmem, kmem.symbol("log_end") or 0, 4)
        buf_len = _u(kmem, kmem.symbol("log_buf_len") or 0, 4)
        chars_sym = kmem.symbol("logged_chars")
        logged = _u(kmem, chars_sym, 4) if opts.since_clear and chars_sym is not None else None
    except VmciError as e:
        warn("unreadable", f"a log_buf variable is not in the dump ({e})")
        return PrintkLog("plain", (), warn.freeze())
    if not 0 < buf_len <= 1 << MAX_PLAIN_BITS or buf_len & (buf_len - 1):
        warn("bad-ring", f"log_buf_len {buf_len} is not a power of two up to 2^{MAX_PLAIN_BITS}")
        return PrintkLog("plain", (), warn.freeze(), ring=log_buf)
    region = _Region(kmem, log_buf, buf_len)
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


# -- the registry -------------------------------------------------------------------------------


def _has(kmem: KernelReader, *names: str) -> bool:
    return all(kmem.symbol(n) is not None for n in names)


#: The log layouts, probed in order; the first whose keys are present is read.
VARIANTS: tuple[LogVariant, ...] = (
    LogVariant("lockless", "Linux 5.10+: printk_ringbuffer (SYMBOL(prb))",
               lambda k: _has(k, "prb") or _has(k, "printk_rb_static"), _read_lockless),
    LogVariant("structured", "Linux 3.5-5.9: printk_log records (SYMBOL(log_first_idx))",
               lambda k: _has(k, "log_buf", "log_buf_len", "log_first_idx", "log_next_idx")
               and (k.size("printk_log") is not None or k.size("log") is not None), _read_structured),
    LogVariant("plain", "before 3.5: a text ring (SYMBOL(log_end))",
               lambda k: _has(k, "log_buf", "log_end", "log_buf_len"), _read_plain),
)


def variant_for(kmem: KernelReader) -> LogVariant:
    """The first of :data:`VARIANTS` whose VMCOREINFO keys are present."""
    for v in VARIANTS:
        if v.applies(kmem):
            return v
    raise NotFoundError("the VMCOREINFO has none of the kernel log keys (SYMBOL(prb), "
                        "SYMBOL(log_first_idx) with SIZE(printk_log), SYMBOL(log_end))")


def get_printk_records(kmem: KernelReader, *, since_clear: bool = False, ring: str = "active",
                       max_descriptors: int = DEFAULT_MAX_DESCRIPTORS) -> PrintkLog:
    """Read the kernel log.

    :param since_clear: only records since the last ``dmesg -C`` (makedumpfile's
        ``--partial-dmesg``).
    :param ring: lockless only: ``active`` (what ``prb`` points at, as makedumpfile reads),
        ``static`` (``printk_rb_static``, the boot ring) or ``both`` (records of the boot ring
        older than the active ring's oldest, then the active ring).
    :param max_descriptors: read at most this many of the newest descriptors.
    """
    if ring not in ("active", "static", "both"):
        raise UsageError(f"ring is active, static or both, not {ring!r}")
    if max_descriptors < 1:
        raise UsageError("max_descriptors must be positive")
    return variant_for(kmem).read(kmem, ReadOptions(since_clear, ring, max_descriptors))


# -- formatting -----------------------------------------------------------------------------------


def _escape_table(signed: bool) -> list[bytes]:
    table = []
    for b in range(256):
        if 0x20 <= b <= 0x7E or 0x09 <= b <= 0x0D:  # isprint() or isspace() in the C locale
            table.append(bytes([b]))
        elif signed and b >= 0x80:  # printf("\\x%02x", *p) of a signed char: 0xe9 prints as \xffffffe9
            table.append(b"\\x%02x" % (b + 0xFFFFFF00))
        else:
            table.append(b"\\x%02x" % b)
    return table


_ESCAPE = {"makedumpfile": _escape_table(True), "vmcore-dmesg": _escape_table(False)}
_PRINTABLE = re.compile(rb"[\x09-\x0d\x20-\x7e]*\Z")
STYLES = tuple(_ESCAPE)


def _format_record(rec: PrintkRecord, caller: bool, style: str) -> bytes:
    ts = rec.ts_nsec or 0
    prefix = b"[%5d.%06d] " % (ts // _NSEC, ts % _NSEC // 1000)
    if caller and rec.caller is not None:
        prefix += b"[%8s] " % rec.caller.encode()
    text = rec.text
    if not _PRINTABLE.match(text):
        text = b"".join(map(_ESCAPE[style].__getitem__, text))
    if style == "makedumpfile":
        text = text.replace(b"\n", b"\n" + b" " * len(prefix))
    return prefix + text + b"\n"


def select_records(records: Iterable[PrintkRecord], *, levels: Iterable[int] | None = None,
                   facilities: Iterable[int] | None = None, tail: int | None = None) -> list[PrintkRecord]:
    """Records whose level/facility is in the given sets (records whose level or facility the
    layout does not give are dropped when filtering on it), then the last ``tail`` of them."""
    lv = None if levels is None else set(levels)
    fc = None if facilities is None else set(facilities)
    out = [r for r in records
           if (lv is None or r.level in lv) and (fc is None or r.facility in fc)]
    if tail is not None:
        if tail < 0:
            raise UsageError("tail must not be negative")
        out = out[len(out) - tail:] if tail else []
    return out


def _records(log: PrintkLog | Iterable[PrintkRecord]) -> Iterable[PrintkRecord]:
    return log.records if isinstance(log, PrintkLog) else log


def format_dmesg(log: PrintkLog | Iterable[PrintkRecord], *, caller: bool = False,
                 levels: Iterable[int] | None = None, facilities: Iterable[int] | None = None,
                 tail: int | None = None, style: str = "makedumpfile") -> bytes:
    """The log as ``makedumpfile --dump-dmesg`` writes it (see the module docstring);
    ``caller=True`` adds makedumpfile 1.7.5's ``[    T123] `` field.

    ``style="vmcore-dmesg"`` writes what kexec-tools' ``vmcore-dmesg`` (2.0.25) does instead: no
    indentation after a newline in the text, ``\\xNN`` escapes of the unsigned byte, and a bare
    timestamp line for an empty (data-less) record.  (It also prints a bare line for a record
    whose text was lost, ``FAILED_LPOS``, which is a counted warning here rather than a record,
    and a ``[    0.000000] `` line for the structured buffer's wrap marker; neither is imitated.)
    """
    if style not in _ESCAPE:
        raise UsageError(f"style is one of {', '.join(STYLES)}, not {style!r}")
    out = []
    for rec in select_records(_records(log), levels=levels, facilities=facilities, tail=tail):
        if rec.raw is not None:
            out.append(rec.raw)
        elif not rec.dataless or style == "vmcore-dmesg":
            out.append(_format_record(rec, caller, style))
    return b"".join(out)


def format_json_lines(log: PrintkLog | Iterable[PrintkRecord], *, levels: Iterable[int] | None = None,
                      facilities: Iterable[int] | None = None, tail: int | None = None) -> bytes:
    """One JSON object per record (:meth:`PrintkRecord.to_dict`), newline-terminated."""
    recs = select_records(_records(log), levels=levels, facilities=facilities, tail=tail)
    return b"".join(json.dumps(r.to_dict()).encode() + b"\n" for r in recs)


def print_dmesg(log: PrintkLog | Sequence[PrintkRecord], file: BinaryIO | None = None, *,
                json_lines: bool = False, **options: Any) -> None:
    """Write :func:`format_dmesg` (or :func:`format_json_lines`) output to ``file``
    (default: standard output)."""
    out = file if file is not None else sys.stdout.buffer
    out.write(format_json_lines(log, **options) if json_lines else format_dmesg(log, **options))

