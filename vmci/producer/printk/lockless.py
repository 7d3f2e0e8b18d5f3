"""The lockless ring of Linux 5.10+, written as ``kernel/printk/printk_ringbuffer.c``
writes it (see :mod:`vmci.producer.printk`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from vmci.core.memory import PAGE_SIZE, Range, SparseMemory
from vmci.kernel.printk import PrintkRecord
from vmci.layouts.printk import (
    DESC_COMMITTED,
    DESC_FINALIZED,
    DESC_RESERVED,
    DESC_REUSABLE,
    EMPTY_LINE_LPOS,
    FAILED_LPOS,
    LOG_NEWLINE,
    PRB_AVGBITS,
    LocklessLayout,
)
from vmci.producer.printk.records import LogRecord, PrintkTruth, expected, meta_bytes
from vmci.producer.printk.target import PrintkTarget


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


def _put_info(arr: bytearray, i: int, L: LocklessLayout, rec: LogRecord, text_len: int,
              num: Callable[[int, int], bytes]) -> None:
    arr[i + L.ts_nsec:i + L.ts_nsec + 8] = num(rec.ts_nsec, 8)
    arr[i + L.text_len:i + L.text_len + 2] = num(text_len, 2)
    if L.meta is not None:
        arr[i + L.meta:i + L.meta + 2] = meta_bytes(rec, L.byteorder)
    if L.caller_id is not None:
        arr[i + L.caller_id:i + L.caller_id + 4] = num(rec.caller_id, 4)
    if L.dev_info is None:
        return
    for off, n, s in ((L.subsystem, L.subsystem_len, rec.subsystem), (L.device, L.device_len, rec.device)):
        if off is not None and n:
            at = i + L.dev_info + off
            arr[at:at + n] = s.encode()[:n - 1].ljust(n, b"\0")


def geometry(records: Sequence[LogRecord], ring_bits: int | None, unit: int, wrap: bool) -> int:
    """``CONFIG_LOG_BUF_SHIFT``: given, or the smallest holding everything (with ``wrap``: an
    eighth of that, so the ring wraps a few times)."""
    if ring_bits is not None:
        return ring_bits
    total = sum(len(r.text) + unit + 32 for r in records) + 64
    bits = max(total.bit_length(), PRB_AVGBITS + 4)
    return max(bits - 3, PRB_AVGBITS + 4) if wrap else bits


def write_lockless(mem: SparseMemory, t: PrintkTarget, records: Sequence[LogRecord], faults: set[str],
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
            out.append(expected(msg, ring.seq[slot], dev_info=L.dev_info is not None, caller=caller,
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
