"""The guest kernel's log, written into guest RAM the way printk writes it, and its truth.

The emulated kernel keeps the log in the layout of its version (:func:`target_for` picks it from
the :class:`~vmci.producer.linux.KernelLayout` profile), placed at the addresses the VMCOREINFO
publishes:

* **lockless** (5.10+): a ``printk_ringbuffer`` at ``SYMBOL(printk_rb_static)``, optionally a
  bigger ``printk_rb_dynamic`` after ``setup_log_buf()`` (then ``prb`` points at it).  Writing
  follows ``kernel/printk/printk_ringbuffer.c``: ``desc_reserve()`` recycles the oldest
  descriptor when the ring is full (pushing the data tail past its block), ``data_alloc()``
  makes the descriptors of overwritten data blocks reusable and wraps blocks that would
  straddle the end of the data array to index 0 (with the id word at both places); records
  are finalized when they end in a newline or when the next one is reserved; ``seq`` follows
  the descriptor index (``prb_reserve()``), ids and lpos start at ``DESC0_ID``/``BLK0_LPOS`` so
  that they overflow early, as the kernel arranges.
* **structured** (3.5-5.9): ``log_store()``: records padded to ``LOG_ALIGN``, the oldest
  dropped until there is room for the record plus an empty header, a zeroed header
  (``len == 0``) where a record does not fit before the end of the buffer.
* **plain** (before 3.5): ``emit_log_char()`` into the character ring, each line prefixed
  ``<level>`` and ``[%5lu.%06lu] `` as ``vprintk()`` did with ``CONFIG_PRINTK_TIME``.

The truth (:class:`PrintkTruth`) is the producer's own bookkeeping: which records it wrote,
which it overwrote, which a fault destroyed -- never what a reader reads back.

Faults (:data:`FAULTS`) damage the log while it is written (a writer stopped mid-record) or
after (a damaged id or len, pages missing from the dump); each says what a careful reader must
report, and the truth counts the records each one cost.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vmci.core.memory import PAGE_SIZE, Range, SparseMemory
from vmci.errors import UsageError
from vmci.kernel.printk import PrintkRecord
from vmci.layouts.printk import (
    CALLER_CPU,
    DESC_COMMITTED,
    DESC_FINALIZED,
    DESC_RESERVED,
    DESC_REUSABLE,
    EMPTY_LINE_LPOS,
    FAILED_LPOS,
    LOCKLESS_KEYS,
    LOCKLESS_SYMBOLS,
    LOG_CONT,
    LOG_NEWLINE,
    PLAIN_SYMBOLS,
    PRB_AVGBITS,
    STRUCTURED_SYMBOLS,
    LocklessLayout,
    StructuredLayout,
    structured_keys,
)
from vmci.producer.config import PANIC_CAUSES
from vmci.producer.linux import KernelLayout, KernelProfile

__all__ = (
    "FAULTS",
    "LogRecord",
    "PrintkTarget",
    "PrintkTruth",
    "boot_log",
    "consistent_values",
    "panic_log",
    "target_for",
    "vmcoreinfo_lines",
    "write_printk_log",
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

_VARIANT_FAULTS = {
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


# -- where the log goes --------------------------------------------------------------------------


@dataclass(frozen=True)
class PrintkTarget:
    """The guest kernel as the log writer sees it."""

    variant: str
    """``lockless``, ``structured`` or ``plain``."""
    version: tuple[int, int]
    values: Mapping[str, int]
    """SIZE/OFFSET/LENGTH values by VMCOREINFO key, e.g. ``"OFFSET(prb_desc.state_var)"``."""
    symbols: Mapping[str, int]
    """Runtime addresses of the log's kernel variables."""
    image_paddr: Callable[[int], int]
    """Physical address of a kernel-image virtual address (where the variables live)."""
    direct_map: int
    """Virtual address of physical 0: allocated buffers are referenced through the direct map."""
    pointer_size: int = 8
    byteorder: str = "little"
    log_align: int = 4
    """``LOG_ALIGN`` (structured): 4 where unaligned access is cheap (x86), else 8."""

    def lookup(self, kind: str, name: str) -> int | None:
        return self.values.get(f"{kind}({name})")

    @property
    def latched_clear_seq(self) -> bool:
        return "SIZE(latched_seq)" in self.values

    @property
    def perfect_fit_wraps(self) -> bool:
        """Before "printk_ringbuffer: don't needlessly wrap data blocks around" (2025, about
        6.18) a block ending exactly at the end of the data array was wrapped to index 0."""
        return self.version < (6, 18)


def consistent_values(profile: KernelProfile) -> dict[str, int]:
    """``printk_ringbuffer`` sizes of a real x86_64 build of ``profile``'s era, to pass as
    ``KernelLayout.values`` (opt-in: the profiles' defaults put ``fail`` inside the text ring):
    ``prb_desc_ring`` grew ``last_finalized_id`` in 5.19 (40 -> 48 bytes)."""
    desc_ring = 48 if profile.since(5, 19) else 40
    return {"SIZE(prb_desc_ring)": desc_ring, "OFFSET(printk_ringbuffer.text_data_ring)": desc_ring,
            "OFFSET(printk_ringbuffer.fail)": desc_ring + 32, "SIZE(printk_ringbuffer)": desc_ring + 40}


def _variant(version: tuple[int, int]) -> str:
    if version >= (5, 10):
        return "lockless"
    return "structured" if version >= (3, 5) else "plain"


def target_for(layout: KernelLayout, *, direct_map: int | None = None) -> PrintkTarget:
    """The log target of a :class:`KernelLayout`: its profile's layout, its VMCOREINFO values
    (as :mod:`vmci.producer.linux` prints them), its KASLR'd symbols."""
    version = layout.profile.version
    variant = _variant(version)
    if variant == "lockless":
        keys = [k for k in LOCKLESS_KEYS if version >= (5, 13) or k[1].split(".")[0] != "latched_seq"]
        syms: tuple[str, ...] = LOCKLESS_SYMBOLS
    elif variant == "structured":
        struct = "printk_log" if version >= (3, 11) else "log"
        keys = list(structured_keys(struct, f"OFFSET({struct}.caller_id)" in layout.values))
        syms = tuple(s for s in STRUCTURED_SYMBOLS if s != "clear_idx" or version >= (4, 19))
    else:
        keys, syms = [], PLAIN_SYMBOLS
    values = {f"{kind}({name})": layout.value(f"{kind}({name})") for kind, name in keys}
    return PrintkTarget(variant, version, values, {s: layout.runtime(s) for s in syms},
                        layout.kernel_paddr, layout.direct_map if direct_map is None else direct_map)


def vmcoreinfo_lines(target: PrintkTarget) -> list[str]:
    """What ``log_buf_vmcoreinfo_setup()`` (``log_buf_kexec_setup()`` before 3.x) appends for
    ``target``, in the kernel's order and formats (``SYMBOL`` as bare hex, the rest decimal)."""
    out = [f"SYMBOL({name})={addr:x}\n" for name, addr in target.symbols.items()]
    out += [f"{key}={value:d}\n" for key, value in target.values.items()]
    return out


# -- the truth -------------------------------------------------------------------------------------


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


# -- records ----------------------------------------------------------------------------------------


def _expected(rec: LogRecord, seq: int | None, *, dev_info: bool, caller: bool, meta: bool,
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


# -- lockless ring emulation --------------------------------------------------------------------


class _Lockless:
    """One ``printk_ringbuffer``'s state; ids and lpos are unbounded counters, stored masked
    (both start where the kernel starts them, so that they overflow within the first wraps)."""

    def __init__(self, L: LocklessLayout, count_bits: int, size_bits: int, perfect_fit_wraps: bool) -> None:
        self.L = L
        self.count, self.size = 1 << count_bits, 1 << size_bits
        self.count_bits, self.size_bits = count_bits, size_bits
        self.wraps_old = perfect_fit_wraps
        bits = 8 * L.word
        self.idm, self.ulmask = L.id_mask, (1 << bits) - 1
        desc0 = (1 << (bits - 2)) - self.count - 1  # DESC0_ID
        self.head_id = self.tail_id = desc0
        self.head_lpos = self.tail_lpos = (1 << bits) - self.size  # BLK0_LPOS
        # per slot: [state, id, begin, next] (masked); slot count-1 is the initial reusable head/tail
        self.desc: list[list[int]] = [[0, 0, 0, 0] for _ in range(self.count)]
        self.desc[self.count - 1] = [DESC_REUSABLE, desc0 & self.idm, FAILED_LPOS, FAILED_LPOS]
        self.seq = [0] * self.count
        self.seq[0] = (1 << 64) - self.count  # incremented to 0 by the first reservation
        self.info: list[LogRecord | None] = [None] * self.count
        self.text_len = [0] * self.count
        self.data = bytearray(self.size)
        self.blocks: deque[tuple[int, int, int]] = deque()  # live (begin, next, id), unbounded
        self.fail = 0

    def state(self, did: int) -> int | None:
        """The state of descriptor ``did``, None for a miss."""
        st, sid, _, _ = self.desc[did % self.count]
        return st if sid == did & self.idm else None

    def next_seq(self) -> int:
        """``prb_next_seq()``: the sequence number the next record gets."""
        slot = (self.head_id + 1) % self.count
        prev = self.seq[slot]
        return slot if prev == 0 and slot != 0 else (prev + self.count) % (1 << 64)

    def _make_reusable(self, did: int) -> bool:
        d = self.desc[did % self.count]
        if d[1] != did & self.idm or d[0] not in (DESC_FINALIZED, DESC_REUSABLE):
            return False
        d[0] = DESC_REUSABLE
        return True

    def _push_data_tail(self, lpos: int) -> bool:
        """``data_push_tail()``: make the descriptors of every block before ``lpos`` reusable."""
        while self.blocks and self.blocks[0][0] < lpos:
            _, nxt, did = self.blocks[0]
            if not self._make_reusable(did):
                return False
            self.blocks.popleft()
            self.tail_lpos = nxt
        return True

    def _push_desc_tail(self) -> bool:
        """``desc_push_tail()``: retire the oldest descriptor and its data."""
        tail = self.tail_id
        if self.state(tail) == DESC_FINALIZED:
            self._make_reusable(tail)
        if self.state(tail) != DESC_REUSABLE:
            return False
        blk = next((b for b in self.blocks if b[2] == tail), None)
        if blk is not None and not self._push_data_tail(blk[1]):
            return False
        if self.state(tail + 1) not in (DESC_FINALIZED, DESC_REUSABLE):
            return False
        self.tail_id = tail + 1
        return True

    def block_size(self, n: int) -> int:
        """``to_blk_size()``: the id word plus ``n`` bytes, aligned to the word."""
        w = self.L.word
        return -(-(n + w) // w) * w

    def _next_lpos(self, begin: int, blk: int) -> int:
        """``get_next_lpos()``; before the 2025 change a perfectly fitting block wrapped too."""
        nxt = begin + blk
        end = nxt if self.wraps_old else nxt - 1
        if begin // self.size == end // self.size:
            return nxt
        return nxt // self.size * self.size + blk

    def _alloc(self, did: int, n: int) -> tuple[int, int, int | None]:
        """``data_alloc()``: (begin, next, index of the text), or data-less lpos and None."""
        if n == 0:
            return EMPTY_LINE_LPOS, EMPTY_LINE_LPOS, None
        w = self.L.word
        blk = self.block_size(n)
        begin = self.head_lpos
        nxt = self._next_lpos(begin, blk)
        if not self._push_data_tail(nxt - self.size):
            return FAILED_LPOS, FAILED_LPOS, None
        self.head_lpos = nxt
        idw = (did & self.idm).to_bytes(w, self.L.byteorder)  # type: ignore[arg-type]
        at = begin % self.size
        self.data[at:at + w] = idw  # the id at the block's lpos, even for a wrapping block
        if nxt - blk != begin:
            at = 0
            self.data[0:w] = idw
        self.blocks.append((begin, nxt, did))
        return begin, nxt, at + w

    def reserve(self, rec: LogRecord, text: bytes) -> int | None:
        """``prb_reserve()`` and write ``text``; the id, or None when the ring refused."""
        if text and self.block_size(len(text)) > self.size - self.L.word:
            return None  # data_check_size()
        did = self.head_id + 1
        if did - self.count == self.tail_id and not self._push_desc_tail():
            self.fail += 1
            return None
        slot = did % self.count
        seq = self.next_seq()
        self.head_id = did
        self.seq[slot] = seq
        self.desc[slot] = [DESC_RESERVED, did & self.idm, 0, 0]
        if self.state(did - 1) == DESC_COMMITTED:  # desc_make_final() of the previous record
            self.desc[(did - 1) % self.count][0] = DESC_FINALIZED
        begin, nxt, at = self._alloc(did, len(text))
        self.desc[slot][2:] = [begin & self.ulmask, nxt & self.ulmask]
        if at is not None:
            self.data[at:at + len(text)] = text
        self.info[slot] = rec
        self.text_len[slot] = len(text)
        return did

    def commit(self, did: int, final: bool) -> None:
        """``prb_commit()``, or ``prb_final_commit()`` for a record ending in a newline."""
        self.desc[did % self.count][0] = DESC_FINALIZED if final else DESC_COMMITTED

    def live_ids(self) -> range:
        return range(self.tail_id, self.head_id + 1)

    def block_of(self, did: int) -> tuple[int, int] | None:
        """(index of the block's id word, block size) of a record with text data."""
        _, _, begin, nxt = self.desc[did % self.count]
        if begin & 1:
            return None
        dist = (nxt - begin) & self.ulmask
        if dist <= self.size and begin >> self.size_bits == ((nxt - 1) & self.ulmask) >> self.size_bits:
            return begin % self.size, dist
        return 0, nxt % self.size

    def put(self, mem: SparseMemory, t: PrintkTarget, ring_pa: int, descs: int, infos: int,
            data: int) -> None:
        """Write the ring struct at ``ring_pa`` and its arrays at physical ``descs``, ``infos``, ``data``."""
        L, bo, w = self.L, t.byteorder, self.L.word

        def num(v: int, n: int) -> bytes:
            return (v & ((1 << 8 * n) - 1)).to_bytes(n, bo)  # type: ignore[arg-type]

        rb = bytearray(L.ring_size)
        if L.fail is not None and L.fail + w <= L.ring_size:
            rb[L.fail:L.fail + w] = num(self.fail, w)  # first: some profiles overlap it with tail_lpos
        dr, tr = L.desc_ring, L.text_data_ring
        fields = [(dr + L.count_bits, num(self.count_bits, 4)),
                  (dr + L.descs, num(t.direct_map + descs, w)),
                  (dr + L.infos, num(t.direct_map + infos, w)),
                  (dr + L.head_id + L.counter, num(self.head_id & self.idm, w)),
                  (dr + L.tail_id + L.counter, num(self.tail_id & self.idm, w)),
                  (tr + L.size_bits, num(self.size_bits, 4)),
                  (tr + L.data, num(t.direct_map + data, w))]
        for lpos_off, value in ((L.head_lpos, self.head_lpos), (L.tail_lpos, self.tail_lpos)):
            if lpos_off is not None:
                fields.append((tr + lpos_off + L.counter, num(value, w)))
        for off, raw in fields:
            rb[off:off + len(raw)] = raw
        mem.write(ring_pa, bytes(rb))
        darr = bytearray(self.count * L.desc_size)
        iarr = bytearray(self.count * L.info_size)
        for slot in range(self.count):
            st, sid, begin, nxt = self.desc[slot]
            d = slot * L.desc_size
            for off, value in ((L.state_var + L.counter, st << L.state_shift | sid),
                               (L.text_blk_lpos + L.lpos_begin, begin), (L.text_blk_lpos + L.lpos_next, nxt)):
                darr[d + off:d + off + w] = num(value, w)
            i = slot * L.info_size
            iarr[i + L.seq:i + L.seq + 8] = num(self.seq[slot], 8)
            rec = self.info[slot]
            if rec is not None:
                _put_info(iarr, i, L, rec, self.text_len[slot], num)
        mem.write(descs, bytes(darr))
        mem.write(infos, bytes(iarr))
        mem.write(data, bytes(self.data))


def _meta_bytes(rec: LogRecord, byteorder: str) -> bytes:
    """``u8 facility; u8 flags:5, level:3`` (bitfields from the low bit on little-endian GCC)."""
    if byteorder == "little":
        bits = rec.flags & 0x1F | (rec.level & 7) << 5
    else:
        bits = (rec.flags & 0x1F) << 3 | rec.level & 7
    return bytes([rec.facility & 0xFF, bits])


def _put_info(arr: bytearray, i: int, L: LocklessLayout, rec: LogRecord, text_len: int,
              num: Callable[[int, int], bytes]) -> None:
    arr[i + L.ts_nsec:i + L.ts_nsec + 8] = num(rec.ts_nsec, 8)
    arr[i + L.text_len:i + L.text_len + 2] = num(text_len, 2)
    if L.meta is not None:
        arr[i + L.meta:i + L.meta + 2] = _meta_bytes(rec, L.byteorder)
    if L.caller_id is not None:
        arr[i + L.caller_id:i + L.caller_id + 4] = num(rec.caller_id, 4)
    if L.dev_info is None:
        return
    for off, n, s in ((L.subsystem, L.subsystem_len, rec.subsystem), (L.device, L.device_len, rec.device)):
        if off is not None and n:
            at = i + L.dev_info + off
            arr[at:at + n] = s.encode()[:n - 1].ljust(n, b"\0")


def _geometry(records: Sequence[LogRecord], ring_bits: int | None, unit: int, wrap: bool) -> int:
    """``CONFIG_LOG_BUF_SHIFT``: given, or the smallest holding everything (with ``wrap``: an
    eighth of that, so the ring wraps a few times)."""
    if ring_bits is not None:
        return ring_bits
    total = sum(len(r.text) + unit + 32 for r in records) + 64
    bits = max(total.bit_length(), PRB_AVGBITS + 4)
    return max(bits - 3, PRB_AVGBITS + 4) if wrap else bits


def _write_lockless(mem: SparseMemory, t: PrintkTarget, records: Sequence[LogRecord], faults: set[str],
                    alloc: Callable[..., int], ring_bits: int, dynamic_bits: int | None, dynamic_after: int,
                    clear_after: int | None) -> PrintkTruth:
    L = LocklessLayout.from_lookup(t.lookup, word=t.pointer_size, byteorder=t.byteorder)
    truth = PrintkTruth("lockless", [], written=len(records))
    static = _Lockless(L, ring_bits - PRB_AVGBITS, ring_bits, t.perfect_fit_wraps)
    rings, active = [static], static
    clear_seq: int | None = None
    stuck_at = len(records) // 3 if "stuck-writer" in faults else None
    for n, rec in enumerate(records):
        if dynamic_bits is not None and n == dynamic_after:
            dyn = _Lockless(L, dynamic_bits - PRB_AVGBITS, dynamic_bits, t.perfect_fit_wraps)
            for did in static.live_ids():  # setup_log_buf() copies the static ring's records
                src = static.info[did % static.count]
                if static.state(did) in (DESC_COMMITTED, DESC_FINALIZED) and src is not None:
                    new = dyn.reserve(src, src.text)
                    if new is not None:
                        dyn.commit(new, True)
            rings.append(dyn)
            active = dyn
        if clear_after == n:
            clear_seq = active.next_seq()  # dmesg -C: clear_seq = prb_next_seq()
        if n == stuck_at or ("half-written" in faults and n == len(records) - 1):
            half = active.reserve(rec, rec.text[: len(rec.text) // 2])  # the panic came mid-write
            if half is not None:
                active.text_len[half % active.count] = 0
                name = "stuck-writer" if n == stuck_at else "half-written"
                truth.damaged[name] = truth.damaged.get(name, 0) + 1
            continue
        done = active.reserve(rec, rec.text)
        if done is not None:
            active.commit(done, bool(rec.flags & LOG_NEWLINE))
    if clear_after is not None and clear_after >= len(records):
        clear_seq = active.next_seq()
    # faults that damage the written ring
    intact = [d for d in active.live_ids()
              if active.state(d) in (DESC_COMMITTED, DESC_FINALIZED) and active.block_of(d) is not None]
    damaged: set[int] = set()
    if "reused-descriptor" in faults and intact:
        did = intact[len(intact) // 2]
        active.desc[did % active.count][:2] = [DESC_RESERVED, (did + active.count) & active.idm]
        damaged.add(did)
        truth.damaged["reused-descriptor"] = 1
    if "corrupt-id" in faults:
        last_page = active.size - PAGE_SIZE if "truncated" in faults else active.size  # keep faults apart
        pick = [d for d in intact if d not in damaged and sum(active.block_of(d) or (0, 0)) <= last_page]
        if pick:
            did = pick[len(pick) // 3]
            where, _ = active.block_of(did) or (0, 0)
            active.data[where] ^= 0x5A
            damaged.add(did)
            truth.damaged["corrupt-id"] = 1
    # place the arrays and write everything
    places = [(alloc(r.count * L.desc_size, PAGE_SIZE, what="printk descriptors"),
               alloc(r.count * L.info_size, PAGE_SIZE, what="printk_info array"),
               alloc(r.size, PAGE_SIZE, what="printk text data ring")) for r in rings]
    ring_va = {id(static): t.symbols["printk_rb_static"]}
    for ring, (descs, infos, data) in zip(rings, places, strict=True):
        if ring is static:
            ring_pa = t.image_paddr(t.symbols["printk_rb_static"])
        else:
            ring_pa = alloc(L.ring_size, 64, what="printk_rb_dynamic")
            ring_va[id(ring)] = t.direct_map + ring_pa
        ring.put(mem, t, ring_pa, descs, infos, data)
    active_va = ring_va[id(active)]
    mem.write(t.image_paddr(t.symbols["prb"]), active_va.to_bytes(L.word, t.byteorder))  # type: ignore[arg-type]
    descs, infos, data = places[rings.index(active)]
    truth.addresses.update(ring=active_va, static_ring=t.symbols["printk_rb_static"],
                           descs=t.direct_map + descs, infos=t.direct_map + infos, data=t.direct_map + data)
    _write_clear_seq(mem, t, L, clear_seq)
    # the truth: what each ring holds that a reader can get back
    lost_pages: set[int] = set()
    if "truncated" in faults:
        last = (data + active.size - 1) // PAGE_SIZE * PAGE_SIZE
        truth.holes = [Range(last, data + active.size - last)]
        lost_pages.add(last // PAGE_SIZE)
    caller, meta = L.caller_id is not None, L.meta is not None
    for ring in rings if active is not static else [static]:
        out: list[PrintkRecord] = []
        for did in ring.live_ids():
            slot = did % ring.count
            st, msg = ring.state(did), ring.info[slot]
            if st == DESC_REUSABLE:
                truth.reusable += ring is active
                continue
            if st not in (DESC_COMMITTED, DESC_FINALIZED) or msg is None:
                continue
            if ring is active and did in damaged:
                continue
            begin = ring.desc[slot][2]
            if begin == FAILED_LPOS:  # only a stuck writer makes data_alloc() fail here
                if ring is active:
                    truth.damaged["stuck-writer"] = truth.damaged.get("stuck-writer", 0) + 1
                continue
            blk = ring.block_of(did)
            if ring is active and blk is not None and lost_pages:
                pages = range((data + blk[0]) // PAGE_SIZE, (data + blk[0] + blk[1] - 1) // PAGE_SIZE + 1)
                if lost_pages & set(pages):
                    truth.damaged["truncated"] = truth.damaged.get("truncated", 0) + 1
                    continue
            out.append(_expected(msg, ring.seq[slot], dev_info=L.dev_info is not None, caller=caller,
                                 meta=meta, dataless=blk is None))
            if ring is active:
                truth.spans.append((slot, *(blk or (0, 0))))
        if ring is active:
            truth.records = out
        if ring is static:
            truth.static_records = out
    truth.failed = active.fail
    truth.overwritten = len(records) - len(truth.records) - sum(truth.damaged.values()) - truth.failed
    truth.clear_seq = clear_seq
    if clear_seq is not None:
        truth.since_clear = [r for r in truth.records if r.seq is not None and r.seq >= clear_seq]
    return truth


def _write_clear_seq(mem: SparseMemory, t: PrintkTarget, L: LocklessLayout, clear_seq: int | None) -> None:
    """``clear_seq``: a u64, or (about 5.13+) a ``latched_seq`` as ``latched_seq_write()``
    leaves it: the seqcount bumped once around each of the two copies (even when at rest)."""
    pa = t.image_paddr(t.symbols["clear_seq"])
    bo = t.byteorder
    val = (clear_seq or 0).to_bytes(8, bo)  # type: ignore[arg-type]
    if L.latched_val is None:
        mem.write(pa, val)
        return
    latch = 2 if clear_seq else 0
    mem.write(pa, latch.to_bytes(4, bo))  # type: ignore[arg-type]
    mem.write(pa + L.latched_val, val * 2)


# -- structured log_buf emulation (3.5-5.9) -------------------------------------------------------


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
            hdr[L.meta:L.meta + 2] = _meta_bytes(rec, bo)
        if L.caller_id is not None:
            hdr[L.caller_id:L.caller_id + 4] = num(rec.caller_id, 4)
        self.buf[self.next_idx:self.next_idx + size] = (bytes(hdr) + rec.text + dict_b).ljust(size, b"\0")
        self.live.append((self.next_idx, self.next_seq, index))
        self.next_idx += size
        self.next_seq += 1
        return True


def _write_structured(mem: SparseMemory, t: PrintkTarget, records: Sequence[LogRecord], faults: set[str],
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
        kept.append((seq, _expected(records[ri], None, dev_info=False, caller=caller, meta=meta)))
        truth.spans.append((-1, idx, log._len_at(idx) or L.size))
    truth.records = [r for _, r in kept]
    truth.overwritten = len(records) - len(live)
    if clear_after is not None:
        truth.clear_seq = log.clear_seq
        truth.since_clear = [r for seq, r in kept if seq >= log.clear_seq]
    return truth


# -- plain text buffer (before 3.5) -----------------------------------------------------------------


def _plain_lines(rec: LogRecord) -> list[bytes]:
    """What ``vprintk()`` emitted for ``rec``: every line with its own ``<level>`` and timestamp."""
    sec, nsec = divmod(rec.ts_nsec, 1_000_000_000)
    prefix = b"<%d>[%5d.%06d] " % (rec.level, sec, nsec // 1000)
    return [prefix + line + b"\n" for line in rec.text.split(b"\n")]


def _write_plain(mem: SparseMemory, t: PrintkTarget, records: Sequence[LogRecord], faults: set[str],
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


# -- the entry point ----------------------------------------------------------------------------------


def write_printk_log(mem: SparseMemory, target: PrintkTarget | KernelLayout, records: Sequence[LogRecord], *,
                     alloc: Callable[..., int], faults: Sequence[str] = (), ring_bits: int | None = None,
                     dynamic_bits: int | None = None, dynamic_after: int = 0,
                     clear_after: int | None = None) -> PrintkTruth:
    """Log ``records`` into guest RAM as ``target``'s kernel does, then apply ``faults``.

    :param alloc: ``alloc(size, align, what=...) -> paddr`` gives free guest RAM for the
        buffers (``PageAllocator.take`` of the scenario builder); the kernel variables go to
        the image addresses of ``target.symbols``.
    :param ring_bits: ``CONFIG_LOG_BUF_SHIFT`` (the log's size is ``1 << ring_bits``); by default
        just big enough (fault ``wrap``: small enough to wrap a few times).
    :param dynamic_bits: lockless: after ``dynamic_after`` records, ``setup_log_buf()`` moves the
        log to a ``1 << dynamic_bits`` dynamic ring (``prb`` then points at it).
    :param clear_after: ``dmesg -C`` after that many records (``clear_seq``/``clear_idx``/``logged_chars``).
    """
    t = target_for(target) if isinstance(target, KernelLayout) else target
    fs = set(faults)
    known = _VARIANT_FAULTS[t.variant] | {"wrap"}
    bad = sorted(fs - known)
    if bad:
        raise UsageError(f"fault {bad[0]!r} does not apply to the {t.variant} log "
                         f"(known: {', '.join(sorted(known))})")
    bits = _geometry(records, ring_bits, t.pointer_size, "wrap" in fs)
    for b in (bits, dynamic_bits):
        if b is not None and not PRB_AVGBITS + 2 <= b <= 31:
            raise UsageError(f"ring size 2^{b} out of range (2^{PRB_AVGBITS + 2}..2^31)")
    if t.variant == "lockless":
        truth = _write_lockless(mem, t, records, fs, alloc, bits, dynamic_bits, dynamic_after, clear_after)
    elif t.variant == "structured":
        truth = _write_structured(mem, t, records, fs, alloc, bits, clear_after)
    else:
        truth = _write_plain(mem, t, records, fs, alloc, bits, clear_after)
    truth.vmcoreinfo_lines = vmcoreinfo_lines(t)
    return truth


# -- what the kernel logs -------------------------------------------------------------------------------

_DEVICES = [("pci", "+pci:0000:00:01.0"), ("virtio", "+virtio:virtio0"), ("block", "b8:0"),
            ("net", "n2"), ("usb", "+usb:1-1")]


def boot_log(n: int = 200, *, seed: int = 0, osrelease: str = "6.1.0-18-amd64", cpus: int = 2,
             start_ns: int = 0) -> list[LogRecord]:
    """``n`` messages a booting guest might log: the banner, e820 lines, device messages with
    ``dev_info``, interrupt-context (CPU) callers, an empty line, a continuation, a multi-line
    record, tabs, control and non-ASCII bytes; timestamps increasing from ``start_ns``."""
    rng = random.Random(seed)
    ts = start_ns
    fixed = [
        (b"Linux version " + osrelease.encode() + b" (debian-kernel@lists.debian.org) (gcc-12 (Debian "
         b"12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian", 5, 0),
        (b"Command line: BOOT_IMAGE=/boot/vmlinuz-" + osrelease.encode()
         + b" root=/dev/vda1 ro console=ttyS0", 6, 0),
        (b"BIOS-provided physical RAM map:", 6, 0),
        (b"BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable", 6, 0),
        (b"", 6, 0),
        (b"x86/fpu: Supporting XSAVE feature 0x001: 'x87 floating point registers'", 6, 0),
        (b"smpboot: CPU0: AMD EPYC\tProcessor (family: 0x17, model: 0x31)", 6, 0),
        (b"clocksource: tsc-early: mask: 0xffffffffffffffff max_cycles: 0x2b3e459bf4c", 6, 0),
        (b"ACPI: RSDP 0x00000000000F58D0 000014 (v00 BOCHS )\nACPI: RSDT 0x000000003FFE1F4B 000034", 6, 0),
        (b"weird bytes: \x01\x7f\xe9t\xc3\xa9 (UTF-8 \xc3\xa9)", 4, 0),
        (b"audit: initializing netlink subsys (disabled)", 5, 4 << 0),
        (b"systemd[1]: Started Journal Service.", 6, 3),
    ]
    out: list[LogRecord] = []
    for i in range(n):
        ts += rng.randrange(1000, 40_000_000)
        if i < len(fixed):
            text, level, facility = fixed[i]
        else:
            kind = rng.randrange(6)
            if kind == 0:
                text = b"pci 0000:00:%02x.0: [1af4:1000] type 00 class 0x020000" % rng.randrange(32)
                level, facility = 6, 0
            elif kind == 1:
                text = b"EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none."
                level, facility = 6, 0
            elif kind == 2:
                noise = bytes(rng.choice(b"abcdefghij") for _ in range(rng.randrange(0, 200)))
                text, level, facility = b"random: crng init done (message %d, %s)" % (i, noise), 5, 0
            elif kind == 3:
                text = b"usb 1-1: new high-speed USB device number %d using xhci_hcd" % i
                level, facility = 6, 0
            elif kind == 4:
                text, level, facility = b"virtio_net virtio0 enp1s0: renamed from eth0", 6, 0
            else:
                text, level, facility = b"workqueue: message %d from a kworker" % i, 4, 0
        caller = rng.choice([1, 1, rng.randrange(2, 30000), CALLER_CPU | rng.randrange(cpus)])
        sub, dev = rng.choice(_DEVICES) if rng.random() < 0.25 else ("", "")
        flags = LOG_NEWLINE if rng.random() < 0.9 else LOG_CONT
        out.append(LogRecord(text, ts, level, facility, caller, sub, dev, flags))
    return out




def _panic_lines(cause: str, task: bytes, tail: bytes) -> list[tuple[bytes, int]]:
    """(text, level) of the messages before the call trace's frames, the frames, and the panic
    message, for ``cause``; ``task`` is the ``CPU: .. PID: .. Comm: ..`` line's start, ``tail``
    its ``Not tainted <release> ...`` end."""
    hw = (b"Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014", 4)
    if cause == "sysrq":  # drivers/tty/sysrq.c sysrq_handle_crash(): panic() directly
        head = [(b"sysrq: Trigger a crash", 6), (b"Kernel panic - not syncing: sysrq triggered crash", 0)]
        frames = [b"dump_stack_lvl+0x44/0x5c", b"panic+0x118/0x2f6", b"sysrq_handle_crash+0x16/0x20",
                  b"__handle_sysrq.cold+0x43/0x11b", b"write_sysrq_trigger+0x24/0x40",
                  b"proc_reg_write+0x56/0xa0", b"vfs_write+0xcb/0x3f0", b"ksys_write+0x6f/0xf0",
                  b"do_syscall_64+0x5b/0xc0", b"entry_SYSCALL_64_after_hwframe+0x64/0xce"]
        return [*head, (task + b" " + tail, 4), hw, (b"Call Trace:", 4), (b" <TASK>", 4),
                *((b" " + f, 4) for f in frames), (b" </TASK>", 4)]
    if cause == "null-deref":  # arch/x86/mm/fault.c show_fault_oops(), then oops_end() -> panic
        frames = [b"ext4_file_write_iter+0x3a5/0x790 [ext4]", b"vfs_write+0x236/0x3f0",
                  b"ksys_write+0x6f/0xf0", b"do_syscall_64+0x5b/0xc0",
                  b"entry_SYSCALL_64_after_hwframe+0x64/0xce"]
        return [(b"BUG: kernel NULL pointer dereference, address: 0000000000000008", 1),
                (b"#PF: supervisor read access in kernel mode", 1),
                (b"Oops: 0000 [#1] PREEMPT SMP NOPTI", 4), (task + b" " + tail, 4), hw,
                (b"RIP: 0010:ext4_file_write_iter+0x3a5/0x790 [ext4]", 4), (b"Call Trace:", 4),
                (b" <TASK>", 4),
                *((b" " + f, 4) for f in frames), (b" </TASK>", 4),
                (b"Kernel panic - not syncing: Fatal exception", 0)]
    if cause == "oom":  # mm/oom_kill.c out_of_memory() with nothing to kill
        frames = [b"dump_stack_lvl+0x44/0x5c", b"panic+0x118/0x2f6", b"out_of_memory.cold+0x2f/0x7e",
                  b"__alloc_pages_slowpath.constprop.0+0xc6c/0xe50", b"__alloc_pages+0x305/0x330",
                  b"folio_alloc+0x17/0x50", b"__filemap_get_folio+0x155/0x340"]
        return [(b"Out of memory and no killable processes...", 3),
                (b"Kernel panic - not syncing: System is deadlocked on memory", 0),
                (task + b" " + tail, 4), hw,
                (b"Call Trace:", 4), (b" <TASK>", 4), *((b" " + f, 4) for f in frames), (b" </TASK>", 4)]
    if cause == "hung-task":  # kernel/hung_task.c check_hung_uninterruptible_tasks()
        frames = [b"dump_stack_lvl+0x44/0x5c", b"panic+0x118/0x2f6", b"watchdog.cold+0xb/0xb",
                  b"kthread+0xd7/0x100", b"ret_from_fork+0x1f/0x30"]
        return [(b"INFO: task jbd2/vda1-8:233 blocked for more than 120 seconds.", 3),
                (b"Kernel panic - not syncing: hung_task: blocked tasks", 0), (task + b" " + tail, 4), hw,
                (b"Call Trace:", 4), (b" <TASK>", 4), *((b" " + f, 4) for f in frames), (b" </TASK>", 4)]
    if cause == "soft-lockup":  # kernel/watchdog.c watchdog_timer_fn() with softlockup_panic
        frames = [b"dump_stack_lvl+0x44/0x5c", b"panic+0x118/0x2f6", b"watchdog_timer_fn.cold+0x3d/0x3d",
                  b"__hrtimer_run_queues+0x112/0x2b0", b"hrtimer_interrupt+0xfc/0x210"]
        return [(b"watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kworker/1:2:87]", 0),
                (task + b" " + tail.replace(b"Not tainted", b"Tainted: G             L"), 4), hw,
                (b"Kernel panic - not syncing: softlockup: hung tasks", 0),
                (b"Call Trace:", 4), (b" <IRQ>", 4), *((b" " + f, 4) for f in frames), (b" </IRQ>", 4)]
    raise UsageError(f"panic cause is one of {', '.join(PANIC_CAUSES)}, not {cause!r}")


def panic_log(*, start_ns: int, osrelease: str = "6.1.0-18-amd64", kaslr_offset: int = 0,
              pid: int = 1234, cpu: int = 0, comm: str = "bash", cause: str = "sysrq") -> list[LogRecord]:
    """What a 6.1 kernel logs before it stops, for ``cause`` (:data:`PANIC_CAUSES`; ``sysrq`` is
    ``echo c > /proc/sysrq-trigger``)."""
    ts = start_ns
    task = b"CPU: %d PID: %d Comm: %s" % (cpu, pid, comm.encode())
    tail = b"Not tainted %s #1  Debian 6.1.76-1" % osrelease.encode()
    message = {"sysrq": b"sysrq triggered crash", "null-deref": b"Fatal exception",
               "oom": b"System is deadlocked on memory", "hung-task": b"hung_task: blocked tasks",
               "soft-lockup": b"softlockup: hung tasks"}
    lines = _panic_lines(cause, task, tail)
    lines += [(b"Kernel Offset: 0x%x from 0xffffffff81000000 (relocation range: "
               b"0xffffffff80000000-0xffffffffbfffffff)" % kaslr_offset, 0),
              (b"---[ end Kernel panic - not syncing: " + message[cause] + b" ]---", 0)]
    out = []
    for text, level in lines:
        ts += 4_000
        out.append(LogRecord(text, ts, level, 0, pid))
    return out

