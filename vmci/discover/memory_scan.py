"""Find VMCOREINFO by scanning guest-physical memory for the kernel's note.

Since 4.13 the kernel allocates ``vmcoreinfo_note`` page-aligned, so the aligned search looks
only at byte 12 of every page (a strided slice, no per-page Python loop) for the note name.  The
full search (``mode="full"``/``"all"``, or ``"auto"`` until an aligned note is valid) looks at
every byte for ``VMCOREINFO\\0`` and keeps 4-byte-aligned hits: older kernels kept the note in
.bss.  Both run in **one walk** over the memory that holds data (:meth:`PhysicalMemory.data_chunks`:
excluded, described-only and known-zero stretches are skipped per run, so the cost follows the
bytes the dump stores, not the RAM it describes).  Every hit is validated like volatility3 does
(namesz 11, type 0, a bounded descsz, text starting with ``OSRELEASE=``, printable) and listed,
accepted or rejected, with its evidence.  The kernel's separate raw-text page
(``vmcoreinfo_data``) is looked for too.

``mode="auto"`` stops early once a valid note cannot be outranked by anything later in memory
(its ``init_uts_ns`` confirmed, CRASHTIME present, page-aligned, its data page found: see
:data:`_CRITERIA`); ``"all"`` (alias ``"full"``) is the exhaustive mode, every byte, every copy.

When several valid notes exist (a kdump kernel's copy, a previous boot's leftovers) the
choice is explained: a text whose ``init_uts_ns`` really holds its release at the physical
address its own ``SYMBOL``/``phys_base`` give describes the kernel in memory; then the copy
carrying ``CRASHTIME`` (the kernel that panicked), page alignment, and a matching data page.
"""

from __future__ import annotations

import re
import string
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from vmci.arch import for_vmcoreinfo
from vmci.core.dump import Dump
from vmci.core.evidence import Evidence, Verdict
from vmci.core.memory import Buffer, PhysicalMemory
from vmci.discover.finding import Candidate, Finding
from vmci.discover.guest_note import note_size, read_or_none
from vmci.discover.strategy import Inputs, Progress
from vmci.errors import VmciError, or_none
from vmci.kernel.vmcoreinfo import VMCOREINFO_NOTE_NAME, VMCOREINFO_NOTE_TYPE, VmcoreInfo
from vmci.layouts.note import NOTE_HEADER_SIZE, align4, note_header_struct

NEEDLE = VMCOREINFO_NOTE_NAME + b"\0"
TEXT_MAGIC = b"OSRELEASE="
#: VMCOREINFO_BYTES is PAGE_SIZE; 256 KiB is the largest Linux page size.
MAX_DESCSZ = 1 << 18
CHUNK = 16 << 20
MAX_REJECTED = 64
#: Bytes the full search goes through by regular expression (numpy not loaded) before switching
#: to :func:`find_needle`.
VECTORISE_AFTER = 1 << 30
#: Hits validated per search (a hostile dump full of note names costs no more than this).
MAX_HITS = 4096

_PRINTABLE = frozenset(string.printable.encode())
_NEEDLE_RE = re.compile(re.escape(NEEDLE))

Mode = Literal["auto", "aligned", "full", "all"]
MODES = ("auto", "aligned", "full", "all")


NAME = "memory-scan"


class MemoryScanStrategy:
    """Scan guest memory for the kernel's note: by default only when nothing else found a text."""

    name = NAME
    rank = 60
    why = "the only text found, by scanning memory"
    needs = None
    device = False
    searches = True
    last_resort = True

    def applies(self, dump: Dump, inputs: Inputs) -> bool:
        return True

    def run(self, dump: Dump, inputs: Inputs, earlier: Sequence[Finding] = ()) -> Finding:
        mode: Mode = "all" if inputs.scan == "all" else "aligned" if inputs.scan == "aligned" else "auto"
        known = {c.text.raw: f.source for f in earlier if f.chosen is not None
                 for c in [f.chosen] if c.text is not None}
        return scan(dump.memory, mode=mode, byteorder=dump.byte_order, progress=inputs.progress, known=known)


def scan(
    mem: PhysicalMemory,
    *,
    mode: Mode = "auto",
    byteorder: str = "little",
    progress: Progress | None = None,
    verify_uts: bool = True,
    known: Mapping[bytes, str] | None = None,
) -> Finding:
    """Scan ``mem`` for VMCOREINFO notes; return every candidate, the rejected hits and a
    justified choice.  ``progress(done, total)`` is called as the scan advances (in units of
    bytes per search: ``total`` is twice the memory size when both searches run).  ``known`` maps
    texts other strategies found to their source: among copies nothing else tells apart, the
    scan prefers one of those."""
    if mode not in MODES:
        raise ValueError(f"unknown scan mode {mode!r}")
    exhaustive = mode in ("full", "all")
    finding = Finding(NAME)
    ev = finding.evidence
    total = mem.size
    known = dict(known or {})
    walk = _Walk(mem, byteorder, verify_uts, full_search=mode != "aligned", exhaustive=exhaustive,
                 known=known)
    reporter = _Reporter(mem, progress, total * (2 if exhaustive else 1))
    walk.run(reporter)
    reporter.finish()

    aligned = sorted(walk.aligned)
    ev.info("aligned pass", f"looked at byte 12 of every page of {total} bytes: "
                            f"{len(aligned)} page-aligned note name(s), {len(walk.data_pages)} page(s) "
                            "starting with OSRELEASE=")
    if walk.stopped is not None:
        ev.info("early stop", f"stopped at {walk.stopped:#x}: the note at {walk.best:#x} ranks first on "
                              "every criterion, nothing later can outrank it (--scan all looks further)")
    candidates = [walk.aligned[h] for h in aligned]
    if exhaustive or (mode == "auto" and not any(c.valid for c in candidates)):
        new = sorted(h for h in walk.full if h not in walk.aligned)
        ev.info("full pass", f"searched every byte: {len(walk.full)} 4-byte-aligned "
                             f"'VMCOREINFO\\0' ({len(new)} not page-aligned), {walk.unaligned} unaligned "
                             "occurrence(s) ignored (a note header is 4-byte aligned)")
        candidates += [_validate(mem, h, False, byteorder) for h in new]
    if walk.capped:
        ev.warn("hits", f"more than {MAX_HITS} note names: only the first {MAX_HITS} were validated")

    finding.candidates = [c for c in candidates if c.valid]
    rejected = [c for c in candidates if not c.valid]
    finding.rejected = rejected[:MAX_REJECTED]
    finding.facts["rejected_hits"] = len(rejected)
    _attach_data_pages(mem, finding, walk.data_pages)
    if verify_uts:
        for c in finding.candidates:
            _check_uts(mem, c)
    _choose(finding, known)
    return finding


# -- the walk -------------------------------------------------------------------------------------


class _Reporter:
    def __init__(self, mem: PhysicalMemory, fn: Progress | None, total: int) -> None:
        self.fn = fn
        self.total = total
        self.weight = total // mem.size if mem.size else 1
        self.ranges = list(mem.ranges)

    def at(self, paddr: int) -> None:
        if self.fn is not None:
            done = sum(min(r.end, paddr) - r.start for r in self.ranges if r.start < paddr)
            self.fn(min(done * self.weight, self.total), self.total)

    def finish(self) -> None:
        if self.fn is not None:
            self.fn(self.total, self.total)


@dataclass
class _Walk:
    """One walk over the memory holding data: the aligned search on every buffer (validating
    hits as they come), the full search while it may still be needed."""

    mem: PhysicalMemory
    byteorder: str
    verify_uts: bool
    full_search: bool
    exhaustive: bool
    known: Mapping[bytes, str] = field(default_factory=dict)
    aligned: dict[int, Candidate] = field(default_factory=dict)
    data_pages: list[int] = field(default_factory=list)
    full_hits: set[int] = field(default_factory=set)
    unaligned: int = 0
    searched: int = 0  # bytes the full search went through
    capped: bool = False
    stopped: int | None = None
    best: int | None = None

    @property
    def full(self) -> list[int]:
        """The 4-byte-aligned hits of the full search, in address order."""
        return sorted(self.full_hits)

    def run(self, rep: _Reporter) -> None:
        searching = self.full_search
        prev_end = None
        tail = b""
        for addr, buf in _segments(self.mem):
            mv = _bytes_view(buf)
            for p in _strided_matches(self.mem, addr, mv, NOTE_HEADER_SIZE, NEEDLE):
                self._aligned_hit(p + NOTE_HEADER_SIZE)
            self.data_pages += _strided_matches(self.mem, addr, mv, 0, TEXT_MAGIC)
            if searching and not self.exhaustive and any(c.valid for c in self.aligned.values()):
                searching = False  # auto: the full search is needed only while no aligned note is valid
            if searching:
                search = find_needle if use_vectorised_search(self.searched, self.exhaustive) else _re_needle
                found = [addr + o for o in search(mv)]
                self.searched += len(mv)
                if prev_end == addr and tail:  # a name split across two buffers
                    seam = tail + bytes(mv[: len(NEEDLE) - 1])
                    found += [addr - len(tail) + m.start() for m in _NEEDLE_RE.finditer(seam)]
                for h in found:
                    if h % 4:
                        self.unaligned += 1
                    elif len(self.full_hits) < MAX_HITS:
                        self.full_hits.add(h)
                    else:
                        self.capped = True
                prev_end = addr + len(mv)
                tail = bytes(mv[-(len(NEEDLE) - 1):])
            rep.at(addr + len(mv))
            if not self.exhaustive and self._unbeatable():
                self.stopped = addr + len(mv)
                return

    def _aligned_hit(self, name_paddr: int) -> None:
        if name_paddr in self.aligned:
            return
        if len(self.aligned) >= MAX_HITS:
            self.capped = True
            return
        self.aligned[name_paddr] = _validate(self.mem, name_paddr, True, self.byteorder)

    def _unbeatable(self) -> bool:
        """Is there a valid aligned note that no later one can outrank (:func:`_rank` all true)?
        Checked without adding evidence: the final checks run once more on every candidate."""
        if not self.verify_uts:
            return False
        for c in self.aligned.values():
            if not c.valid or c.text is None or c.facts.get("crashtime") is None:
                continue
            if not any(_data_page_matches(self.mem, c.text.raw, p) for p in self.data_pages):
                continue
            if self.known and c.text.raw not in self.known:
                continue
            if uts_verdict(self.mem, c.text)[0] is True:
                self.best = c.paddr
                return True
        return False


def _segments(mem: PhysicalMemory) -> Iterator[tuple[int, Buffer]]:
    """Large readable buffers covering everything that could hold a note (known-zero
    stretches left out by the container)."""
    return mem.data_chunks(max_size=CHUNK)


#: The 4-byte words of which every occurrence of the needle holds one at a 4-byte-aligned offset
#: of the buffer, with that word's offset in the needle: an occurrence at ``o`` covers the aligned
#: word at ``o + (-o % 4)``, which starts 0, 1, 2 or 3 bytes into the needle.
_WORDS = tuple((int.from_bytes(NEEDLE[k:k + 4], "little"), k) for k in range(4))
_BLOCK = 1 << 16  # words compared per step (256 KiB: the masks stay in cache)


def find_needle(mv: memoryview) -> list[int]:
    """Offsets of every occurrence of ``VMCOREINFO\\0`` in ``mv``, at any alignment, in order.

    Vectorised: the buffer's aligned 4-byte words are compared, a cache-sized block at a time,
    with the four words an occurrence must hold one of (:data:`_WORDS`); only the few matches
    are compared in full.  About twice as fast as a regular-expression search on real memory."""
    import numpy as np

    words = np.frombuffer(mv, np.dtype("<u4"), count=len(mv) // 4)
    hits: set[int] = set()
    for lo in range(0, len(words), _BLOCK):
        block = words[lo:lo + _BLOCK]
        mask = block == _WORDS[0][0]
        for value, _ in _WORDS[1:]:
            mask |= block == value
        if not mask.any():
            continue
        for i in (np.flatnonzero(mask) + lo).tolist():
            for value, k in _WORDS:
                o = 4 * i - k
                if int(words[i]) == value and o >= 0 and mv[o:o + len(NEEDLE)] == NEEDLE:
                    hits.add(o)
    # an occurrence ending by len(mv) holds its aligned word below len(mv) // 4 * 4: none is missed
    return sorted(hits)


def use_vectorised_search(searched: int, exhaustive: bool) -> bool:
    """Whether the full search uses :func:`find_needle`: when numpy's import (~0.1 s, ~12 MiB) is
    paid for, because it is loaded already (a kdump walk, the caller), the caller asked for the
    exhaustive search, or the search went past :data:`VECTORISE_AFTER` bytes, where it saves more
    than it costs."""
    return exhaustive or "numpy" in sys.modules or searched >= VECTORISE_AFTER


def _re_needle(mv: memoryview) -> list[int]:
    """What :func:`find_needle` returns, by regular expression (no numpy import)."""
    return [m.start() for m in _NEEDLE_RE.finditer(mv)]


def _bytes_view(buf: Buffer) -> memoryview:
    mv = memoryview(buf)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def _strided_matches(mem: PhysicalMemory, addr: int, mv: memoryview, at: int, magic: bytes) -> list[int]:
    """Page addresses ``p`` in this buffer whose bytes ``p+at ..`` start with ``magic``.

    One strided slice picks byte ``at`` of every page; only pages where it equals the first
    magic byte are compared in full (reading across the buffer end when needed).
    """
    ps = mem.page_size
    first = (at - addr) % ps
    column = bytes(mv[first::ps])
    out = []
    j = column.find(magic[:1])
    while j >= 0:
        off = first + j * ps
        if bytes(mv[off:off + len(magic)]) == magic or (
            off + len(magic) > len(mv) and read_or_none(mem, addr + off, len(magic)) == magic
        ):
            out.append(addr + off - at)
        j = column.find(magic[:1], j + 1)
    return out



# -- validation -----------------------------------------------------------------------------------


def _validate(mem: PhysicalMemory, name_paddr: int, aligned_pass: bool, byteorder: str) -> Candidate:
    """Check the note whose name is at ``name_paddr`` (its header 12 bytes before)."""
    hdr_paddr = name_paddr - NOTE_HEADER_SIZE
    ev = Evidence()
    cand = Candidate(NAME, hdr_paddr, None, None, ev)
    how = "page-aligned pass" if aligned_pass else "full pass"
    ev.info("hit", f"'VMCOREINFO\\0' at {name_paddr:#x} ({how})", name_paddr)
    raw = read_or_none(mem, hdr_paddr, NOTE_HEADER_SIZE) if hdr_paddr >= 0 else None
    if raw is None:
        ev.fail("note header", "the 12 bytes before the name are not readable", hdr_paddr)
        return cand
    namesz, descsz, ntype = note_header_struct(byteorder).unpack(raw)
    problems = []
    if namesz != len(NEEDLE):
        problems.append(f"n_namesz={namesz} (want 11)")
    if ntype != VMCOREINFO_NOTE_TYPE:
        problems.append(f"n_type={ntype} (want 0)")
    if descsz == 0:
        problems.append("n_descsz=0")
    elif descsz > MAX_DESCSZ:
        problems.append(f"n_descsz={descsz} exceeds {MAX_DESCSZ} (VMCOREINFO_BYTES is a page)")
    if problems:
        ev.fail("note header", "not a VMCOREINFO note header: " + ", ".join(problems), hdr_paddr)
        return cand
    ev.ok("note header", f"n_namesz=11 n_descsz={descsz} n_type=0", hdr_paddr)
    desc_paddr = name_paddr + align4(len(NEEDLE))
    desc = read_or_none(mem, desc_paddr, descsz)
    if desc is None:
        ev.fail("descriptor", f"{descsz} bytes at {desc_paddr:#x} are not all in the dump", desc_paddr)
        return cand
    if not desc.startswith(TEXT_MAGIC):
        ev.fail("descriptor", f"text starts with {desc[:16]!r}, not OSRELEASE=", desc_paddr)
        return cand
    bad = next((i for i, b in enumerate(desc) if b not in _PRINTABLE), None)
    if bad is not None:
        ev.fail("descriptor", f"non-printable byte {desc[bad]:#04x} at text offset {bad}", desc_paddr + bad)
        return cand
    text = VmcoreInfo.parse(desc)
    cand.text = text
    cand.note_size = note_size(descsz)
    ev.ok("descriptor", f"{descsz} printable bytes, OSRELEASE={text.osrelease}", desc_paddr)
    page = or_none(lambda: text.pagesize) or 4096
    if descsz > max(4096, page):
        ev.warn("descriptor", f"{descsz} bytes exceed VMCOREINFO_BYTES ({max(4096, page)})", desc_paddr)
    end = desc_paddr + align4(descsz)
    final = read_or_none(mem, end, NOTE_HEADER_SIZE)
    if final == bytes(NOTE_HEADER_SIZE):
        ev.ok("final note", "the empty terminating note follows, as update_vmcoreinfo_note() writes", end)
    else:
        ev.warn("final note", "no empty note after the descriptor (not the kernel's note buffer?)", end)
    ps = mem.page_size
    cand.facts["page_aligned"] = hdr_paddr % ps == 0
    if hdr_paddr % ps == 0:
        ev.ok("alignment", "page-aligned, like the kernel's vmcoreinfo_note allocation (>= 4.13)", hdr_paddr)
    else:
        ev.info("alignment", "only 4-byte aligned: a .bss note (kernel < 4.13) or a copy", hdr_paddr)
    codes = sorted({w.code for w in text.warnings})
    if codes:
        ev.warn("lint", "text warnings: " + ", ".join(codes))
    else:
        ev.ok("lint", "the text is as the kernel writes it")
    crashtime = or_none(lambda: text.crashtime)
    cand.facts["crashtime"] = crashtime
    if crashtime is not None:
        ev.info("crashtime", f"CRASHTIME={crashtime}: saved on the panic path")
    return cand


def _data_page_matches(mem: PhysicalMemory, raw: bytes, page: int) -> bool:
    """Does the page at ``page`` hold exactly ``raw`` (then a NUL or its end)?"""
    got = read_or_none(mem, page, len(raw) + 1) or read_or_none(mem, page, len(raw))
    return got is not None and got[: len(raw)] == raw and got[len(raw):] in (b"", b"\0")


def _attach_data_pages(mem: PhysicalMemory, finding: Finding, pages: list[int]) -> None:
    """Match ``vmcoreinfo_data`` pages (the raw text, then zeros) to the candidates."""
    used: set[int] = set()
    for c in finding.candidates:
        assert c.text is not None
        raw = c.text.raw
        for p in pages:
            if _data_page_matches(mem, raw, p):
                c.data_paddr = p
                used.add(p)
                c.evidence.ok("data page", "the raw text also sits page-aligned here (vmcoreinfo_data)", p)
                break
        else:
            c.evidence.info("data page", "no page holds this text alone (vmcoreinfo_data not found)")
    orphans = [p for p in pages if p not in used]
    finding.facts["data_pages"] = list(pages)
    for p in orphans:
        head = read_or_none(mem, p, 64) or b""
        release = head.split(b"\n", 1)[0].decode("ascii", "backslashreplace")
        finding.evidence.info("data page", f"page starting {release!r} matches no note", p)
    if not finding.candidates:
        for p in orphans:
            orphan = _text_page_candidate(mem, p)
            if orphan is not None:
                finding.candidates.append(orphan)


def _text_page_candidate(mem: PhysicalMemory, paddr: int) -> Candidate | None:
    """A text found only as a raw page (its note is gone or excluded from the dump)."""
    page = read_or_none(mem, paddr, mem.page_size)
    if page is None:
        return None
    raw = page.split(b"\0", 1)[0]
    if not raw.endswith(b"\n") or any(b not in _PRINTABLE for b in raw):
        return None
    ev = Evidence()
    ev.warn("data page", "text found only as a raw page, without its note: check it is current", paddr)
    text = VmcoreInfo.parse(raw)
    c = Candidate(NAME, None, None, text, ev, data_paddr=paddr)
    c.facts["page_aligned"] = False
    c.facts["crashtime"] = or_none(lambda: text.crashtime)
    return c


def uts_verdict(mem: PhysicalMemory, t: VmcoreInfo) -> tuple[bool | None, str, int | None]:
    """(confirmed, why, where): does ``init_uts_ns`` hold the text's release where the text
    says the kernel is?  ``None`` when that cannot be checked."""
    try:
        sym = t.symbol("init_uts_ns")
        pb = t.phys_base
        name_off = t.offset("uts_namespace", "name")
    except VmciError as err:
        return None, f"cannot check: {err}", None
    arch = for_vmcoreinfo(t)  # the architecture whose kernels write NUMBER(phys_base)
    paddr = None
    if sym is not None and pb is not None and not pb.legacy_symbol and arch is not None:
        paddr = arch.kernel_phys(sym, pb.value)
        if paddr is None and arch.image_offset(t) is not None:  # arm64: kimage_voffset places the image
            paddr = (sym - (arch.image_offset(t) or 0)) & ((1 << 64) - 1)
    if paddr is None:
        why = "legacy SYMBOL(phys_base) only" if pb is not None and pb.legacy_symbol else \
            "needs SYMBOL(init_uts_ns) and NUMBER(phys_base)"
        return None, f"cannot check: {why}", None
    data = read_or_none(mem, paddr, 16 + 390) if paddr >= 0 else None
    if data is None:
        return None, "cannot check: its physical address is not in the dump", paddr
    release = (t.osrelease or "").encode()[:64]
    offsets = [name_off] if name_off is not None else [0, 4, 8, 16]
    ok = any(data[o:o + 6] == b"Linux\0" and data[o + 130:o + 131 + len(release)] == release + b"\0"
             for o in offsets if 0 <= o <= 16)
    if ok:
        return True, (f"holds 'Linux' and release {t.osrelease}: the text's KERNELOFFSET "
                      "and phys_base place the running kernel correctly"), paddr
    return False, ("does not hold this release where the text's symbols and "
                   "phys_base point: a stale copy (previous boot?)"), paddr


def find_uts(mem: PhysicalMemory, t: VmcoreInfo, limit: int = MAX_HITS) -> int | None:
    """Where a ``new_utsname`` holding the text's release really is: the address (in ``mem``'s
    terms) of the first one whose ``sysname`` is ``Linux`` and whose ``release`` is the text's,
    found by one pass over the memory that holds data (bounded: at most ``limit`` matches looked
    at).  None when there is none."""
    release = (t.osrelease or "").encode()[:64]
    if not release:
        return None
    # sysname, nodename: 65 bytes each; release follows
    pattern = re.compile(re.escape(b"Linux\0") + b"[\x00-\xff]{124}" + re.escape(release + b"\0"))
    for addr, buf in _segments(mem):
        for hits, m in enumerate(pattern.finditer(_bytes_view(buf))):
            if hits >= limit:
                return None
            return addr + m.start()
    return None


def _check_uts(mem: PhysicalMemory, c: Candidate) -> None:
    """Does ``init_uts_ns`` hold this text's release where the text says the kernel is?"""
    assert c.text is not None
    ok, why, paddr = uts_verdict(mem, c.text)
    c.facts["uts_confirmed"] = ok
    verdict: Verdict = "info" if ok is None else "ok" if ok else "warn"
    c.evidence.add("init_uts_ns", why, verdict, paddr)


# -- choice ---------------------------------------------------------------------------------------

_CRITERIA = (
    ("uts", "its init_uts_ns holds its release where its own KERNELOFFSET/phys_base place it"),
    ("not-refuted", "the other's init_uts_ns check failed (stale)"),
    ("crashtime", "it carries CRASHTIME: the kernel that panicked (the other looks like the kdump "
                  "capture kernel's or a pre-panic copy)"),
    ("aligned", "it is page-aligned like the kernel's own allocation"),
    ("data", "its raw-text page (vmcoreinfo_data) exists too"),
    ("known", "its text is the one another strategy found"),
)


def _rank(c: Candidate, known: Mapping[bytes, str] | None = None) -> tuple[bool, ...]:
    return (
        c.facts.get("uts_confirmed") is True,
        c.facts.get("uts_confirmed") is not False,
        c.facts.get("crashtime") is not None,
        bool(c.facts.get("page_aligned")),
        c.data_paddr is not None,
        known is not None and c.text is not None and c.text.raw in known,
    )


def _differences(a: VmcoreInfo, b: VmcoreInfo) -> str:
    keys = ("OSRELEASE", "BUILD-ID", "KERNELOFFSET", "NUMBER(phys_base)", "CRASHTIME")
    diffs = [f"{k} {a.get(k)!s} vs {b.get(k)!s}" for k in keys if a.get(k) != b.get(k)]
    return "; ".join(diffs) or "other keys differ"


def _choose(finding: Finding, known: Mapping[bytes, str] | None = None) -> None:
    ev = finding.evidence
    cands = finding.candidates
    if not cands:
        ev.fail("choice", "no valid VMCOREINFO note in memory")
        return
    best = max(cands, key=lambda c: _rank(c, known))  # max() keeps the first (lowest address) among equals
    finding.chosen = best
    where = f"{best.paddr:#x}" if best.paddr is not None else f"data page {best.data_paddr:#x}"
    texts: dict[bytes, list[Candidate]] = {}
    for c in cands:
        assert c.text is not None
        texts.setdefault(c.text.raw, []).append(c)
    finding.facts["distinct_texts"] = len(texts)
    if len(cands) == 1:
        ev.ok("choice", f"one valid note, at {where}", best.paddr)
        return
    if len(texts) == 1:
        ev.ok("choice", f"{len(cands)} copies of the same text; using {where}", best.paddr)
        return
    ev.warn("choice", f"{len(texts)} distinct VMCOREINFO texts in memory; using {where}", best.paddr)
    assert best.text is not None
    rb = _rank(best, known)
    for other in cands:
        if other is best or other.text is None or other.text.raw == best.text.raw:
            continue
        ro = _rank(other, known)
        reason = next((why for (_, why), x, y in zip(_CRITERIA, rb, ro, strict=True) if x and not y), None)
        place = f"{other.paddr:#x}" if other.paddr is not None else f"data page {other.data_paddr:#x}"
        diff = _differences(best.text, other.text)
        if reason is None:
            ev.warn("choice", f"over {place} ({diff}): nothing tells them apart, kept the lower address",
                    other.paddr)
        else:
            ev.ok("choice", f"over {place} ({diff}): {reason}", other.paddr)
