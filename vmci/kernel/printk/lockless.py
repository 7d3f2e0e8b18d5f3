"""The lockless ring buffer of Linux 5.10+ (kernel commit 896fbe20b4e2 "printk: use the lockless
ringbuffer"): descriptors from ``tail_id`` to ``head_id``, each record's text block checked by
the kernel's own ``get_data()`` rules (see :mod:`vmci.kernel.printk`)."""

from __future__ import annotations

from typing import NamedTuple

from vmci.errors import NotFoundError, VmciError
from vmci.kernel.printk.memory import Region, cstr, int_at, lookup, record_meta, split_caller
from vmci.kernel.printk.records import (
    MAX_COUNT_BITS,
    MAX_SIZE_BITS,
    KernelReader,
    PrintkLog,
    PrintkRecord,
    ReadOptions,
    Warnings,
)
from vmci.layouts.printk import (
    DESC_COMMITTED,
    DESC_FINALIZED,
    DESC_RESERVED,
    DESC_REUSABLE,
    EMPTY_LINE_LPOS,
    LocklessLayout,
)


class _Ring(NamedTuple):
    records: list[PrintkRecord]
    reusable: int = 0
    failed: int | None = None


def _read_ring(kmem: KernelReader, L: LocklessLayout, addr: int, opts: ReadOptions,
               warn: Warnings) -> _Ring:
    """Walk one ``printk_ringbuffer`` at ``addr``."""
    w, bo = L.word, L.byteorder
    try:
        rb = kmem.read(addr, L.ring_size)
    except VmciError:
        warn("unreadable", f"the printk_ringbuffer at {addr:#x} is not in the dump")
        return _Ring([])
    failed = None if L.fail is None else int_at(rb, L.fail + L.counter, w, bo)
    dr, tr = L.desc_ring, L.text_data_ring
    count_bits = int_at(rb, dr + L.count_bits, 4, bo)
    size_bits = int_at(rb, tr + L.size_bits, 4, bo)
    if not 1 <= size_bits <= MAX_SIZE_BITS or not 0 <= count_bits <= MAX_COUNT_BITS:
        warn("bad-ring", f"impossible ring geometry: {1 << min(count_bits, 64)} descriptors, "
                         f"2^{size_bits} text bytes")
        return _Ring([], 0, failed)
    if count_bits > size_bits:
        warn("bad-ring", f"2^{count_bits} descriptors for 2^{size_bits} text bytes; "
                         f"reading 2^{size_bits} of them")
        count_bits = size_bits
    descs = int_at(rb, dr + L.descs, w, bo)
    infos = int_at(rb, dr + L.infos, w, bo)
    head = int_at(rb, dr + L.head_id + L.counter, w, bo)
    tail = int_at(rb, dr + L.tail_id + L.counter, w, bo)
    data = int_at(rb, tr + L.data, w, bo)
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
    d_region = Region(kmem, descs, count * L.desc_size)
    i_region = Region(kmem, infos, count * L.info_size)
    t_region = Region(kmem, data, size)
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
        sv = int_at(desc, sv_off, w, bo)
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
        seq = int_at(info, L.seq, 8, bo)
        if seq & (count - 1) != slot:
            warn("seq-mismatch", f"descriptor {did:#x} in slot {slot} has seq {seq}")
        text_len = int_at(info, L.text_len, 2, bo)
        begin, nxt = int_at(desc, b_off, w, bo), int_at(desc, n_off, w, bo)
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
        facility, flags, level = record_meta(info, meta, bo)
        tid, cpu = split_caller(None if L.caller_id is None else int_at(info, L.caller_id, 4, bo))
        subsystem = device = None
        if L.dev_info is not None:
            if L.subsystem is not None:
                subsystem = cstr(info[L.dev_info + L.subsystem:L.dev_info + L.subsystem + L.subsystem_len])
            if L.device is not None:
                device = cstr(info[L.dev_info + L.device:L.dev_info + L.device + L.device_len])
        records.append(PrintkRecord(seq, int_at(info, L.ts_nsec, 8, bo), text, level, facility, flags,
                                    tid, cpu, subsystem, device, dataless))
    return _Ring(records, reusable, failed)


def _block_text(t_region: Region, begin: int, nxt: int, did: int, text_len: int, w: int, bo: str,
                size_bits: int, ulmask: int, seq: int, warn: Warnings) -> bytes | None:
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
    if int_at(block, 0, w, bo) != did:
        warn("data-id-mismatch", f"record seq {seq}: its data block belongs to id "
                                 f"{int_at(block, 0, w, bo):#x}, not {did:#x}")
        return None
    if text_len > data_size - w:
        warn("text-truncated", f"record seq {seq}: text_len {text_len} exceeds its "
                               f"{data_size - w}-byte block")
        text_len = data_size - w
    return block[w:w + text_len]


def _clear_seq(kmem: KernelReader, L: LocklessLayout, warn: Warnings) -> int | None:
    """``clear_seq``: a u64 until about 5.13, then a ``struct latched_seq`` whose seqcount's
    low bit selects ``val[0]`` or ``val[1]``."""
    addr = kmem.symbol("clear_seq")
    if addr is None:
        warn("no-clear-seq", "the VMCOREINFO has no SYMBOL(clear_seq); printing the whole log")
        return None
    try:
        if L.latched_val is None:
            return int_at(kmem.read(addr, 8), 0, 8, L.byteorder)
        latch = int_at(kmem.read(addr, 4), 0, 4, L.byteorder)
        return int_at(kmem.read(addr + L.latched_val + 8 * (latch & 1), 8), 0, 8, L.byteorder)
    except VmciError:
        warn("unreadable", f"clear_seq at {addr:#x} is not in the dump; printing the whole log")
        return None


def read_lockless(kmem: KernelReader, opts: ReadOptions) -> PrintkLog:
    L = LocklessLayout.from_lookup(lookup(kmem), word=kmem.pointer_size, byteorder=kmem.byteorder)
    warn = Warnings()
    static = kmem.symbol("printk_rb_static")
    prb = kmem.symbol("prb")
    active: int | None = None
    if prb is not None:
        try:
            active = int_at(kmem.read(prb, L.word), 0, L.word, L.byteorder)
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
