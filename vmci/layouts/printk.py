"""The kernel log's binary layouts, as the VMCOREINFO describes them; shared by reader and writer.

The kernel publishes the sizes and member offsets of its log structures in the VMCOREINFO
(``log_buf_vmcoreinfo_setup()`` in ``kernel/printk/printk.c``, ``log_buf_kexec_setup()`` before
3.x), so a reader needs no debuginfo.  The offsets differ between builds (word size, config,
version), which is why these layouts are plain offset tables filled from the VMCOREINFO keys,
not fixed declarations.  Three eras:

* **lockless ring buffer**, Linux 5.10+ (kernel commit 896fbe20b4e2 "printk: use the lockless
  ringbuffer"): ``struct printk_ringbuffer`` = a descriptor ring (``prb_desc`` + a parallel
  ``printk_info`` array) and a text data ring of ``{unsigned long id; char data[]}`` blocks;
* **structured** ``log_buf``, Linux 3.5-5.9: variable-length ``struct printk_log`` records
  (named ``struct log`` until 3.11, "printk: rename struct log to struct printk_log");
* **plain** text ``log_buf`` before 3.5: a character ring indexed by ``log_end``.

Facts that the VMCOREINFO does *not* carry are constants here, each with its source:

* the descriptor state lives in the top two bits of ``state_var`` (an ``unsigned long``), the
  descriptor id in the other bits (``DESC_SV()`` in ``kernel/printk/printk_ringbuffer.h``);
* the data-less lpos values ``FAILED_LPOS`` (0x1, data lost) and ``NO_LPOS``/``EMPTY_LINE_LPOS``
  (0x3, an empty line; renamed in 6.8) -- both have bit 0 set;
* ``facility`` and the ``flags:5, level:3`` bitfield byte follow the u16 ``text_len`` of
  ``printk_info`` (and the u16 ``dict_len`` of ``printk_log``); they are not exported, so their
  place is an inference from the struct declarations, checked against the exported offsets;
* the record flags ``LOG_NEWLINE`` (2) and ``LOG_CONT`` (8), and bit 31 of ``caller_id``
  marking a CPU (not a task) caller (``printk_caller_id()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from vmci.errors import FormatError

__all__ = (
    "CALLER_CPU",
    "DESC_COMMITTED",
    "DESC_FINALIZED",
    "DESC_RESERVED",
    "DESC_REUSABLE",
    "EMPTY_LINE_LPOS",
    "FAILED_LPOS",
    "LOCKLESS_KEYS",
    "LOCKLESS_SYMBOLS",
    "LOG_CONT",
    "LOG_NEWLINE",
    "PLAIN_SYMBOLS",
    "PRB_AVGBITS",
    "STRUCTURED_SYMBOLS",
    "LocklessLayout",
    "Lookup",
    "StructuredLayout",
    "structured_keys",
)

#: Descriptor states (``enum desc_state``); "miss" (an id mismatch) is a reader's pseudo state.
DESC_RESERVED, DESC_COMMITTED, DESC_FINALIZED, DESC_REUSABLE = 0, 1, 2, 3
#: ``lpos`` of a record whose data could not be stored.
FAILED_LPOS = 0x1
#: ``lpos`` of a record with empty text (``NO_LPOS`` in 5.10-6.7, ``EMPTY_LINE_LPOS`` since 6.8).
EMPTY_LINE_LPOS = 0x3
#: ``enum printk_info_flags`` / ``enum log_flags``.
LOG_NEWLINE, LOG_CONT = 0x2, 0x8
#: ``caller_id`` bit 31: the id is a CPU number (printk from interrupt context), else a PID.
CALLER_CPU = 0x80000000
#: ``PRB_AVGBITS``: the kernel sizes its descriptor ring as one descriptor per 32 text bytes.
PRB_AVGBITS = 5

#: What the lockless era exports, in ``log_buf_vmcoreinfo_setup()`` order: symbols, then
#: ``(kind, name)`` keys.  ``latched_seq`` (about 5.13+, when ``clear_seq`` became a
#: ``struct latched_seq``) comes last.
LOCKLESS_SYMBOLS = ("prb", "printk_rb_static", "clear_seq")
LOCKLESS_KEYS: tuple[tuple[str, str], ...] = (
    ("SIZE", "printk_ringbuffer"),
    ("OFFSET", "printk_ringbuffer.desc_ring"),
    ("OFFSET", "printk_ringbuffer.text_data_ring"),
    ("OFFSET", "printk_ringbuffer.fail"),
    ("SIZE", "prb_desc_ring"),
    ("OFFSET", "prb_desc_ring.count_bits"),
    ("OFFSET", "prb_desc_ring.descs"),
    ("OFFSET", "prb_desc_ring.infos"),
    ("OFFSET", "prb_desc_ring.head_id"),
    ("OFFSET", "prb_desc_ring.tail_id"),
    ("SIZE", "prb_desc"),
    ("OFFSET", "prb_desc.state_var"),
    ("OFFSET", "prb_desc.text_blk_lpos"),
    ("SIZE", "prb_data_blk_lpos"),
    ("OFFSET", "prb_data_blk_lpos.begin"),
    ("OFFSET", "prb_data_blk_lpos.next"),
    ("SIZE", "printk_info"),
    ("OFFSET", "printk_info.seq"),
    ("OFFSET", "printk_info.ts_nsec"),
    ("OFFSET", "printk_info.text_len"),
    ("OFFSET", "printk_info.caller_id"),
    ("OFFSET", "printk_info.dev_info"),
    ("SIZE", "dev_printk_info"),
    ("OFFSET", "dev_printk_info.subsystem"),
    ("LENGTH", "printk_info_subsystem"),
    ("OFFSET", "dev_printk_info.device"),
    ("LENGTH", "printk_info_device"),
    ("SIZE", "prb_data_ring"),
    ("OFFSET", "prb_data_ring.size_bits"),
    ("OFFSET", "prb_data_ring.data"),
    ("OFFSET", "prb_data_ring.head_lpos"),
    ("OFFSET", "prb_data_ring.tail_lpos"),
    ("SIZE", "atomic_long_t"),
    ("OFFSET", "atomic_long_t.counter"),
    ("SIZE", "latched_seq"),
    ("OFFSET", "latched_seq.val"),
)
#: Structured era (3.5-5.9): ``clear_idx`` is exported by later 4.x/5.x kernels only.
STRUCTURED_SYMBOLS = ("log_buf", "log_buf_len", "log_first_idx", "clear_idx", "log_next_idx")
#: Plain era (before 3.5).
PLAIN_SYMBOLS = ("log_buf", "log_end", "log_buf_len", "logged_chars")

#: ``lookup(kind, name)``: a VMCOREINFO value, e.g. ``lookup("OFFSET", "prb_desc.state_var")``,
#: or None when the key is absent.
Lookup = Callable[[str, str], int | None]


def structured_keys(struct: str, caller_id: bool) -> tuple[tuple[str, str], ...]:
    """The structured era's keys for ``struct`` ("printk_log", or "log" before 3.11)."""
    fields = ("ts_nsec", "len", "text_len", "dict_len", *(("caller_id",) if caller_id else ()))
    return (("SIZE", struct), *(("OFFSET", f"{struct}.{f}") for f in fields))


class _Keys:
    """Reads keys through a lookup and remembers which required ones are missing."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.missing: list[str] = []

    def need(self, kind: str, name: str) -> int:
        v = self.lookup(kind, name)
        if v is None or v < 0:
            self.missing.append(f"{kind}({name})")
            return 0
        return v

    def opt(self, kind: str, name: str) -> int | None:
        v = self.lookup(kind, name)
        return None if v is None or v < 0 else v


def _check_word(word: int, byteorder: str) -> None:
    if word not in (4, 8):
        raise FormatError(f"unsupported word size {word} (4 or 8)", field="pointer_size")
    if byteorder not in ("little", "big"):
        raise FormatError(f"unsupported byte order {byteorder!r}", field="byteorder")


def _fits(what: str, offset: int, size: int, container: int) -> None:
    if offset + size > container:
        raise FormatError(f"VMCOREINFO places {what} ({size} bytes at {offset}) outside its "
                          f"{container}-byte structure", field=what)


@dataclass(frozen=True)
class LocklessLayout:
    """Offsets of the lockless ring buffer's structures (bytes, from the VMCOREINFO keys).

    Members are relative to their own structure: ``count_bits`` to the ``prb_desc_ring``,
    which itself sits at ``desc_ring`` inside ``printk_ringbuffer``.  ``unsigned long`` and
    pointers are ``word`` bytes; ``atomic_long_t`` values are read at ``counter``.
    """

    word: int
    byteorder: str
    ring_size: int
    desc_ring: int
    text_data_ring: int
    fail: int | None
    """``atomic_long_t fail``: reservations that failed outright; None when the VMCOREINFO's
    offsets put it inside the rings (as no real build does)."""
    count_bits: int
    descs: int
    infos: int
    head_id: int
    tail_id: int
    desc_size: int
    state_var: int
    text_blk_lpos: int
    lpos_begin: int
    lpos_next: int
    info_size: int
    seq: int
    ts_nsec: int
    text_len: int
    caller_id: int | None
    dev_info: int | None
    subsystem: int | None
    subsystem_len: int
    device: int | None
    device_len: int
    size_bits: int
    data: int
    head_lpos: int | None
    tail_lpos: int | None
    counter: int
    latched_val: int | None

    @classmethod
    def from_lookup(cls, lookup: Lookup, *, word: int, byteorder: str) -> LocklessLayout:
        """Build from VMCOREINFO keys; :class:`FormatError` names missing or impossible keys."""
        _check_word(word, byteorder)
        k = _Keys(lookup)
        dev_info = k.opt("OFFSET", "printk_info.dev_info")
        sub = k.opt("OFFSET", "dev_printk_info.subsystem")
        dev = k.opt("OFFSET", "dev_printk_info.device")
        layout = cls(
            word=word, byteorder=byteorder,
            ring_size=k.need("SIZE", "printk_ringbuffer"),
            desc_ring=k.need("OFFSET", "printk_ringbuffer.desc_ring"),
            text_data_ring=k.need("OFFSET", "printk_ringbuffer.text_data_ring"),
            fail=k.opt("OFFSET", "printk_ringbuffer.fail"),
            count_bits=k.need("OFFSET", "prb_desc_ring.count_bits"),
            descs=k.need("OFFSET", "prb_desc_ring.descs"),
            infos=k.need("OFFSET", "prb_desc_ring.infos"),
            head_id=k.need("OFFSET", "prb_desc_ring.head_id"),
            tail_id=k.need("OFFSET", "prb_desc_ring.tail_id"),
            desc_size=k.need("SIZE", "prb_desc"),
            state_var=k.need("OFFSET", "prb_desc.state_var"),
            text_blk_lpos=k.need("OFFSET", "prb_desc.text_blk_lpos"),
            lpos_begin=k.need("OFFSET", "prb_data_blk_lpos.begin"),
            lpos_next=k.need("OFFSET", "prb_data_blk_lpos.next"),
            info_size=k.need("SIZE", "printk_info"),
            seq=k.need("OFFSET", "printk_info.seq"),
            ts_nsec=k.need("OFFSET", "printk_info.ts_nsec"),
            text_len=k.need("OFFSET", "printk_info.text_len"),
            caller_id=k.opt("OFFSET", "printk_info.caller_id"),
            dev_info=dev_info,
            subsystem=None if dev_info is None else sub,
            subsystem_len=k.opt("LENGTH", "printk_info_subsystem") or 0,
            device=None if dev_info is None else dev,
            device_len=k.opt("LENGTH", "printk_info_device") or 0,
            size_bits=k.need("OFFSET", "prb_data_ring.size_bits"),
            data=k.need("OFFSET", "prb_data_ring.data"),
            head_lpos=k.opt("OFFSET", "prb_data_ring.head_lpos"),
            tail_lpos=k.opt("OFFSET", "prb_data_ring.tail_lpos"),
            counter=k.opt("OFFSET", "atomic_long_t.counter") or 0,
            latched_val=(k.opt("OFFSET", "latched_seq.val")
                         if k.opt("SIZE", "latched_seq") is not None else None),
        )
        if k.missing:
            raise FormatError(f"the VMCOREINFO lacks {', '.join(k.missing)} for the lockless "
                              "printk ring buffer", field=k.missing[0])
        layout._validate()
        # "fail" is only informative: drop it when it overlaps the two rings it should follow
        rings = [(layout.desc_ring, k.opt("SIZE", "prb_desc_ring") or 0),
                 (layout.text_data_ring, k.opt("SIZE", "prb_data_ring") or 0)]
        f = layout.fail
        if f is not None and (f + word > layout.ring_size
                              or any(o < f + word and f < o + n for o, n in rings)):
            layout = replace(layout, fail=None)
        return layout

    def _validate(self) -> None:
        w = self.word
        _fits("printk_ringbuffer.desc_ring", self.desc_ring, self.tail_id + self.counter + w, self.ring_size)
        for name in ("count_bits", "descs", "infos", "head_id"):
            _fits(f"prb_desc_ring.{name}", self.desc_ring + getattr(self, name), 4, self.ring_size)
        _fits("printk_ringbuffer.text_data_ring", self.text_data_ring,
              max(self.size_bits + 4, self.data + w), self.ring_size)
        _fits("prb_desc.state_var", self.state_var + self.counter, w, self.desc_size)
        _fits("prb_desc.text_blk_lpos", self.text_blk_lpos,
              max(self.lpos_begin, self.lpos_next) + w, self.desc_size)
        _fits("printk_info.seq", self.seq, 8, self.info_size)
        _fits("printk_info.ts_nsec", self.ts_nsec, 8, self.info_size)
        _fits("printk_info.text_len", self.text_len, 2, self.info_size)
        if self.caller_id is not None:
            _fits("printk_info.caller_id", self.caller_id, 4, self.info_size)
        if self.dev_info is not None:
            for name, off, n in (("subsystem", self.subsystem, self.subsystem_len),
                                 ("device", self.device, self.device_len)):
                if off is not None:
                    _fits(f"dev_printk_info.{name}", self.dev_info + off, n, self.info_size)

    @property
    def id_mask(self) -> int:
        """``DESC_ID_MASK``: every bit of ``state_var`` but the top two."""
        return (1 << (8 * self.word - 2)) - 1

    @property
    def state_shift(self) -> int:
        """``DESC_FLAGS_SHIFT``: the state is ``state_var >> state_shift``."""
        return 8 * self.word - 2

    @property
    def meta(self) -> int | None:
        """Offset of ``facility`` in ``printk_info`` (``flags:5, level:3`` is the next byte),
        if the two bytes after the u16 ``text_len`` lie before the next exported member."""
        after = self.text_len + 2
        following = [o for o in (self.caller_id, self.dev_info, self.info_size)
                     if o is not None and o > self.text_len]
        return after if after + 2 <= min(following) else None


@dataclass(frozen=True)
class StructuredLayout:
    """``struct printk_log`` (or ``struct log``, 3.5-3.10) offsets; the text follows the header
    (``size`` bytes), the dictionary follows the text, ``len`` counts all plus padding."""

    struct: str
    word: int
    byteorder: str
    size: int
    ts_nsec: int
    len: int
    text_len: int
    dict_len: int | None
    caller_id: int | None

    @classmethod
    def from_lookup(cls, lookup: Lookup, *, word: int, byteorder: str) -> StructuredLayout:
        """``printk_log`` keys, else the pre-3.11 ``log`` ones (crash and makedumpfile accept both)."""
        _check_word(word, byteorder)
        struct = "printk_log" if lookup("SIZE", "printk_log") is not None else "log"
        k = _Keys(lookup)
        layout = cls(
            struct=struct, word=word, byteorder=byteorder,
            size=k.need("SIZE", struct),
            ts_nsec=k.need("OFFSET", f"{struct}.ts_nsec"),
            len=k.need("OFFSET", f"{struct}.len"),
            text_len=k.need("OFFSET", f"{struct}.text_len"),
            dict_len=k.opt("OFFSET", f"{struct}.dict_len"),
            caller_id=k.opt("OFFSET", f"{struct}.caller_id"),
        )
        if k.missing:
            raise FormatError(f"the VMCOREINFO lacks {', '.join(k.missing)} for the structured "
                              "printk log buffer", field=k.missing[0])
        for name, off, n in (("ts_nsec", layout.ts_nsec, 8), ("len", layout.len, 2),
                             ("text_len", layout.text_len, 2), ("dict_len", layout.dict_len, 2),
                             ("caller_id", layout.caller_id, 4)):
            if off is not None:
                _fits(f"{struct}.{name}", off, n, layout.size)
        return layout

    @property
    def meta(self) -> int | None:
        """Offset of ``facility`` (then the ``flags:5, level:3`` byte) after the u16 ``dict_len``."""
        if self.dict_len is None:
            return None
        after = self.dict_len + 2
        end = self.caller_id if self.caller_id is not None and self.caller_id > self.dict_len else self.size
        return after if after + 2 <= end else None
