"""Named consistency verdicts (PASS / WARN / FAIL) across the places a VMCOREINFO text was found.

Each check is a function registered with :func:`check` (a name and an applicability rule) that
yields :class:`~vmci.analysis.result.CheckResult` records: a stable ``name`` (documented in the
JSON contract) and a one-line ``detail`` saying why.  FAIL means a reader will get something
wrong; WARN that something is off but readers cope (or a known producer bug, named).
:data:`CHECKS` runs in registration order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from vmci.analysis.result import CheckResult, Status
from vmci.core.dump import Dump
from vmci.core.headers import KdumpHeader, RawHeader
from vmci.core.record import Record
from vmci.discover import strategy
from vmci.discover.guest_note import RESULT
from vmci.discover.run import Discovery
from vmci.errors import FormatError, or_none
from vmci.kernel.vmcoreinfo import VmcoreInfo

U64 = (1 << 64) - 1
QEMU_PHYS_BASE_BUG = "qemu-phys-base-hex-bug"
Check = CheckResult  # short name for the result record in this module
_ORDER: tuple[Status, ...] = ("PASS", "WARN", "FAIL")


class CheckContext(Record):
    """What a check looks at: the dump and every strategy's finding."""

    dump: Dump
    discovery: Discovery

    @property
    def text(self) -> VmcoreInfo | None:
        """The chosen text, if any."""
        chosen = self.discovery.chosen
        return chosen.text if chosen is not None else None

    @property
    def kdump(self) -> bool:
        return isinstance(self.dump.header, KdumpHeader)


CheckFn = Callable[[CheckContext], Iterable[CheckResult]]


class RegisteredCheck(Record):
    """A check in the registry: the names it reports under, when it applies, what it does."""

    name: str
    """The check's name (``strategy:`` and ``note-size-vs-record:`` checks add the strategy)."""
    applies: Callable[[CheckContext], bool]
    """Whether it has anything to say about this dump and discovery."""
    run: CheckFn
    """Yields its results."""
    doc: str
    """What it checks."""


#: Every check, in the order they run and report.
CHECKS: list[RegisteredCheck] = []


def _always(ctx: CheckContext) -> bool:
    return True


def check(name: str, *, applies: Callable[[CheckContext], bool] = _always) -> Callable[[CheckFn], CheckFn]:
    """Register a check function under ``name``."""
    def register(fn: CheckFn) -> CheckFn:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"check {name!r} is registered twice")
        CHECKS.append(RegisteredCheck(name, applies, fn, (fn.__doc__ or "").strip()))
        return fn
    return register


def run_checks(dump: Dump, disc: Discovery) -> list[CheckResult]:
    """Every registered check that applies to this dump and discovery, in registry order."""
    ctx = CheckContext(dump, disc)
    return [r for c in CHECKS if c.applies(ctx) for r in c.run(ctx)]


def worst(checks: Iterable[CheckResult]) -> Status:
    """The most severe status (PASS when there is no check)."""
    return max((c.status for c in checks), key=_ORDER.index, default="PASS")


def qemu_hex_phys_base(text_value: str, bits: int = 64) -> int | None:
    """What QEMU's ``vmcoreinfo_update_phys_base`` stores for ``NUMBER(phys_base)=text_value``:
    ``strtoull(value, 16)``, a minus sign negating modulo 2**bits.  None if not hex-parsable."""
    v = text_value.strip()
    neg = v.startswith("-")
    digits = v.lstrip("+-")
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    try:
        n = int(digits, 16)
    except ValueError:
        return None
    mask = (1 << bits) - 1
    return (-n if neg else n) & mask


def _arch_kaslr_keys(ctx: CheckContext) -> tuple[str, ...]:
    """The keys the text's architecture (else the dump's, else x86_64's) places a KASLR'd kernel with."""
    from vmci.arch import for_vmcoreinfo, lookup

    arch = (for_vmcoreinfo(ctx.text) if ctx.text is not None else None) or lookup(ctx.dump.arch)
    return arch.kaslr_keys if arch is not None and arch.kaslr_keys else ("KERNELOFFSET", "NUMBER(phys_base)")


@check("strategy")
def _strategies(ctx: CheckContext) -> Iterator[CheckResult]:
    """Each strategy that found a text PASSes; one the caller asked for or fed, or that follows a
    device seen present, FAILs with its last failed step; no text at all FAILs vmcoreinfo-found."""
    disc = ctx.discovery
    for f in disc.findings:
        asked = f.source in disc.requested
        present = bool(f.facts.get("present"))
        if f.found:
            yield Check(f"strategy:{f.source}", "PASS", "reached a valid VMCOREINFO text")
        elif asked or (present and strategy(f.source).device):
            fails = [s for c in f.rejected for s in c.evidence if s.verdict == "fail"]
            fails += [s for s in f.evidence if s.verdict == "fail" and s.code != RESULT]
            why = f"{fails[-1].action}: {fails[-1].detail}" if fails else "nothing found"
            yield Check(f"strategy:{f.source}", "FAIL", why)
    if not disc.found:
        yield Check("vmcoreinfo-found", "FAIL", disc.reason)


@check("sources-agree")
def _sources_agree(ctx: CheckContext) -> Iterator[CheckResult]:
    """The texts the strategies chose are byte-equal (NUL padding aside: WARN).  A strategy that
    lists several copies (the exhaustive memory scan: a kdump kernel's, a previous boot's) is
    represented by the one it chose, with its reasons in its evidence."""
    by_source: dict[str, bytes] = {}
    for f in ctx.discovery.findings:
        valid = [c for c in f.candidates if c.text is not None]
        pick = f.chosen if f.chosen is not None and f.chosen.text is not None else next(iter(valid), None)
        if pick is not None and pick.text is not None:
            by_source.setdefault(pick.source, pick.text.raw)
    if len(by_source) < 2:
        if by_source:
            yield Check("sources-agree", "PASS", f"one source only ({next(iter(by_source))})")
        return
    ref_src, ref = next(iter(by_source.items()))
    differ = [s for s, raw in by_source.items() if raw != ref]
    if not differ:
        yield Check("sources-agree", "PASS", f"{', '.join(by_source)} hold byte-equal texts")
        return
    soft = [s for s in differ if by_source[s].rstrip(b"\0") == ref.rstrip(b"\0")]
    hard = [s for s in differ if s not in soft]
    if not hard:
        detail = f"{', '.join(soft)} differ from {ref_src} only in NUL padding"
        yield Check("sources-agree", "WARN", detail)
        return
    a, b = VmcoreInfo.parse(ref), VmcoreInfo.parse(by_source[hard[0]])
    keys = [k for k in ("OSRELEASE", "BUILD-ID", "KERNELOFFSET", "NUMBER(phys_base)", "CRASHTIME")
            if a.get(k) != b.get(k)]
    what = "; ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in keys) or "other keys differ"
    yield Check("sources-agree", "FAIL", f"{ref_src} and {', '.join(hard)} hold different texts ({what})")


def _kdump_header_seen(ctx: CheckContext) -> bool:
    kh = ctx.discovery.finding("kdump-header")
    return ctx.kdump and kh is not None and bool(kh.facts.get("present"))


@check("kdump-vmcoreinfo-vs-notes", applies=_kdump_header_seen)
def _kdump_vs_notes(ctx: CheckContext) -> Iterator[CheckResult]:
    """crash (the sub-header's offset_vmcoreinfo) and libkdumpfile (the notes blob) read the same text."""
    kh = ctx.discovery.finding("kdump-header")
    assert kh is not None
    agree = kh.facts.get("agree")
    off = kh.facts.get("offset_vmcoreinfo", 0)
    if agree is True:
        yield Check("kdump-vmcoreinfo-vs-notes", "PASS",
                    f"offset_vmcoreinfo {off:#x} and the notes blob's note hold the same bytes")
    elif agree is False:
        yield Check("kdump-vmcoreinfo-vs-notes", "FAIL",
                    f"offset_vmcoreinfo {off:#x} (+{kh.facts.get('size_vmcoreinfo')}) and the "
                    "notes blob's VMCOREINFO descriptor at "
                    f"{kh.facts.get('note_desc_offset', 0):#x} "
                    "differ: crash and libkdumpfile read different texts")
    else:
        yield Check("kdump-vmcoreinfo-vs-notes", "WARN",
                    "no VMCOREINFO note in the notes blob: libkdumpfile (v4+) sees none")


def _kdump_phys_base_given(ctx: CheckContext) -> bool:
    header = ctx.dump.header
    return isinstance(header, KdumpHeader) and ctx.text is not None and header.phys_base is not None


@check("kdump-phys-base", applies=_kdump_phys_base_given)
def _kdump_phys_base(ctx: CheckContext) -> Iterator[CheckResult]:
    """The kdump header's phys_base equals the text's NUMBER(phys_base); QEMU's hexadecimal parse
    of it is named (qemu-phys-base-hex-bug)."""
    assert ctx.text is not None
    yield _phys_base(ctx.dump, ctx.text)


def _kdump_release_given(ctx: CheckContext) -> bool:
    return ctx.kdump and ctx.text is not None


@check("utsname-vs-osrelease", applies=_kdump_release_given)
def _utsname(ctx: CheckContext) -> Iterator[CheckResult]:
    """The kdump header's utsname.release equals OSRELEASE (empty, as QEMU writes it, passes)."""
    assert ctx.text is not None
    assert isinstance(ctx.dump.header, KdumpHeader)
    uts = ctx.dump.header.utsname.release
    rel = ctx.text.osrelease
    if not uts:
        yield Check("utsname-vs-osrelease", "PASS",
                    f"header utsname.release is empty (QEMU fills only machine); OSRELEASE={rel}")
    elif uts == rel:
        yield Check("utsname-vs-osrelease", "PASS", f"both say {rel}")
    else:
        yield Check("utsname-vs-osrelease", "FAIL", f"header release {uts!r} but OSRELEASE={rel}")


def _phys_base(dump: Dump, text: VmcoreInfo) -> Check:
    assert isinstance(dump.header, KdumpHeader) and dump.header.phys_base is not None
    header, bits = dump.header.phys_base, dump.header.ulong_bits
    mask = (1 << bits) - 1
    name = text.phys_base_key  # arm64: PHYS_OFFSET, what QEMU puts there for EM_AARCH64
    key = f"NUMBER({name})"
    raw = text.get(key)
    if raw is None:
        return Check("kdump-phys-base", "WARN",
                     f"header phys_base {header:#x}; the text has no {key} to compare")
    raw = raw.removesuffix("\r")
    try:
        value = text.number(name)
    except FormatError as err:
        return Check("kdump-phys-base", "WARN", f"{key} unreadable: {err}")
    assert value is not None
    if header == value & mask:
        return Check("kdump-phys-base", "PASS", f"header phys_base {header:#x} = {key}={raw}")
    buggy = qemu_hex_phys_base(raw, bits)
    if buggy is not None and header == buggy:
        return Check(QEMU_PHYS_BASE_BUG, "WARN",
                     f"header phys_base {header:#x} is NUMBER(phys_base)={raw} parsed as hex: QEMU's "
                     f"vmcoreinfo_update_phys_base() bug (the kernel prints decimal); the true value is "
                     f"{value} ({value & mask:#x}); crash and vmci use the text's")
    if header == 0:
        return Check("kdump-phys-base", "WARN",
                     f"header phys_base 0 but {key}={raw}: the writer did not read the "
                     "guest's note (QEMU's 'architecture guess'); readers must use the text's")
    if dump.memory.ranges and header == dump.memory.ranges[0].start:
        return Check("kdump-phys-base", "WARN",
                     f"header phys_base {header:#x} (the lowest RAM block) but {key}={raw}: the writer did "
                     "not read the guest's note (QEMU's 'architecture guess'); readers must use the text's")
    return Check("kdump-phys-base", "FAIL",
                 f"header phys_base {header:#x} but {key}={raw} ({value & mask:#x})")


def _blob_and_vcia(ctx: CheckContext) -> bool:
    blob, acpi = ctx.discovery.finding("address-blob"), ctx.discovery.finding("acpi")
    return blob is not None and "blob" in blob.facts and acpi is not None and bool(acpi.facts.get("vcia"))


@check("address-blob-vs-acpi", applies=_blob_and_vcia)
def _blob_vs_acpi(ctx: CheckContext) -> Iterator[CheckResult]:
    """The page an address blob names (the user's, or a stream's) is the page the dump's own ACPI
    tables name (SSDT ``VMCOREIN``, ``VCIA``); a disagreement FAILs naming both (reported only then:
    agreeing sources are already in ``sources-agree``)."""
    blob, acpi = ctx.discovery.finding("address-blob"), ctx.discovery.finding("acpi")
    assert blob is not None and acpi is not None
    addr, vcia = int(blob.facts["blob"]), int(acpi.facts["vcia"])
    pages = [c.facts["page"] for c in blob.candidates + blob.rejected if "page" in c.facts]
    page = int(pages[0]) if pages else addr & ~0xFFF
    if page != vcia:
        yield Check("address-blob-vs-acpi", "FAIL",
                    f"the address blob ({addr:#x}) names page {page:#x}; the dump's ACPI tables (SSDT "
                    f"VMCOREIN, VCIA) name page {vcia:#x}: a blob of another device, another VM or an "
                    "earlier boot")


def _given_and_saved(ctx: CheckContext) -> bool:
    saved = ctx.dump.saved_state.devices if ctx.dump.saved_state is not None else None
    return saved is not None and (saved.vmcoreinfo_addr_blob is not None
                                  or saved.vmcoreinfo_record is not None)


@check("given-vs-saved-state", applies=_given_and_saved)
def _given_vs_saved(ctx: CheckContext) -> Iterator[CheckResult]:
    """An address blob or fw_cfg record given by the user equals what the dump's saved VM state (a
    migration stream's device section) holds; the caller's is used, so a difference FAILs naming both."""
    saved = ctx.dump.saved_state.devices if ctx.dump.saved_state is not None else None
    assert saved is not None
    blob = ctx.discovery.finding("address-blob")
    stream_blob = saved.vmcoreinfo_addr_blob
    if blob is not None and stream_blob is not None and "blob" in blob.facts:
        theirs = int.from_bytes(stream_blob[:8], "little")
        if int(blob.facts["blob"]) != theirs:
            yield Check("given-vs-saved-state", "FAIL",
                        f"the given address blob says {int(blob.facts['blob']):#x}; the stream's saved "
                        f"etc/vmcoreinfo-addr says {theirs:#x}")
    rec, stream_rec = ctx.discovery.finding("fw-cfg-record"), saved.vmcoreinfo_record
    if rec is not None and stream_rec is not None and "paddr" in rec.facts:
        given = (int(rec.facts["paddr"]), int(rec.facts["size"]))
        if given != (stream_rec.paddr, stream_rec.size):
            yield Check("given-vs-saved-state", "FAIL",
                        f"the given fw_cfg record says paddr {given[0]:#x}, size {given[1]}; the stream's "
                        f"saved etc/vmcoreinfo says paddr {stream_rec.paddr:#x}, size {stream_rec.size}")


#: The dump's own copies of the guest's note, which a device record must lead to.
_OWN_NOTE = ("elf-note", "kdump-header")


def _own_text(ctx: CheckContext) -> tuple[str, VmcoreInfo] | None:
    for source in _OWN_NOTE:
        f = ctx.discovery.finding(source)
        if f is not None and f.chosen is not None and f.chosen.text is not None:
            return source, f.chosen.text
    return None


def _record_and_own_note(ctx: CheckContext) -> bool:
    rec = ctx.discovery.finding("fw-cfg-record")
    return rec is not None and "paddr" in rec.facts and _own_text(ctx) is not None


@check("fw-cfg-record-vs-note", applies=_record_and_own_note)
def _record_vs_note(ctx: CheckContext) -> Iterator[CheckResult]:
    """A fw_cfg record leads to the note the dump itself carries (QEMU copied that note from the
    address the guest registered, at dump time); otherwise the memory holding the dump's own note
    is looked for and FAILs naming both addresses (reported only on a disagreement)."""
    from vmci.discover.memory_scan import scan

    rec = ctx.discovery.finding("fw-cfg-record")
    own = _own_text(ctx)
    assert rec is not None and own is not None
    source, text = own
    reached = rec.chosen.text if rec.chosen is not None else None
    if reached is not None and reached.raw == text.raw:
        return
    paddr = int(rec.facts["paddr"])
    found = scan(ctx.dump.memory, byteorder=ctx.dump.byte_order, known={text.raw: source})
    where = [c.paddr for c in found.candidates if c.text is not None and c.text.raw == text.raw]
    there = (f"the guest's note holding that text is at {where[0]:#x}" if where and where[0] is not None
             else "no note in memory holds that text")
    yield Check("fw-cfg-record-vs-note", "FAIL",
                f"the fw_cfg record names paddr {paddr:#x}, which does not hold the dump's own note "
                f"({source}); {there}: a record of another VM or an earlier boot")


def _raw_with_text(ctx: CheckContext) -> bool:
    return isinstance(ctx.dump.header, RawHeader) and ctx.text is not None


@check("raw-base", applies=_raw_with_text)
def _raw_base(ctx: CheckContext) -> Iterator[CheckResult]:
    """A raw image's base (``--raw-base``, the user's word) puts the kernel's ``init_uts_ns`` where
    the text's symbols and phys_base say it is; else the image is searched for it and the base
    that would put it there is named next to the given one."""
    from vmci.discover.memory_scan import find_uts, uts_verdict

    assert ctx.text is not None and isinstance(ctx.dump.header, RawHeader)
    base, mem = ctx.dump.header.base, ctx.dump.memory
    ok, _, paddr = uts_verdict(mem, ctx.text)
    if paddr is None:  # the text lacks what places init_uts_ns
        return
    if ok:
        yield Check("raw-base", "PASS", f"with the image at physical {base:#x}, init_uts_ns ({paddr:#x}) "
                                        f"holds release {ctx.text.osrelease}")
        return
    found = find_uts(mem, ctx.text)
    if found is None:
        yield Check("raw-base", "WARN", f"with the image at physical {base:#x}, release "
                                        f"{ctx.text.osrelease} is neither in init_uts_ns ({paddr:#x}, by "
                                        "the text) nor anywhere in the image (a stale text?)")
        return
    name_off = or_none(lambda: ctx.text.offset("uts_namespace", "name") if ctx.text is not None else None)
    implied = base + paddr + (name_off or 0) - found
    if name_off is None:  # the struct's start is not known to the byte: RAM images start on a page
        implied = implied // 4096 * 4096
    yield Check("raw-base", "FAIL", f"the image is said to start at physical {base:#x}, but the kernel's "
                                    f"init_uts_ns (release {ctx.text.osrelease}, at {paddr:#x} by the text) "
                                    f"sits at file offset {found - (name_off or 0) - base:#x}: the image "
                                    f"starts at physical {implied:#x}")


@check("note-size-vs-record")
def _record_size(ctx: CheckContext) -> Iterator[CheckResult]:
    """A note reached through a device record fits the size the record registers (else QEMU drops it)."""
    for c in ctx.discovery.candidates:
        size = c.facts.get("record_size")
        if size is None or c.note_size is None:
            continue
        status: Status = "PASS" if c.note_size <= size else "FAIL"
        yield Check(f"note-size-vs-record:{c.source}", status,
                    f"the note is {c.note_size} bytes, the record says {size}"
                    + ("" if status == "PASS" else ": QEMU would drop it"))


def _has_text(ctx: CheckContext) -> bool:
    return ctx.text is not None


@check("vmcoreinfo-lint", applies=_has_text)
def _lint(ctx: CheckContext) -> Iterator[CheckResult]:
    """The text is as the kernel writes it (lint warnings other than missing KASLR keys)."""
    assert ctx.text is not None
    lint = [w for w in ctx.text.warnings if w.code not in ("missing-kaslr-key",)]
    if lint:
        yield Check("vmcoreinfo-lint", "WARN", "; ".join(str(w) for w in lint[:6])
                    + (f"; and {len(lint) - 6} more" if len(lint) > 6 else ""))
    else:
        yield Check("vmcoreinfo-lint", "PASS", "the text is as the kernel writes it")


@check("kaslr-keys", applies=_has_text)
def _kaslr_keys(ctx: CheckContext) -> Iterator[CheckResult]:
    """The keys the architecture places a KASLR'd kernel with (x86_64: KERNELOFFSET and
    NUMBER(phys_base); arm64: KERNELOFFSET, NUMBER(kimage_voffset) and NUMBER(PHYS_OFFSET)) are
    present (readers need them under KASLR)."""
    text = ctx.text
    assert text is not None
    keys = _arch_kaslr_keys(ctx)
    missing = [k for k in keys if k not in text]
    if not missing:
        yield Check("kaslr-keys", "PASS", f"{', '.join(keys[:-1])} and {keys[-1]} present")
    elif "NUMBER(phys_base)" in missing and "SYMBOL(phys_base)" in text:
        yield Check("kaslr-keys", "WARN", "only the legacy SYMBOL(phys_base) (kernel < 4.10)"
                    + ("; KERNELOFFSET missing" if "KERNELOFFSET" in missing else ""))
    else:
        yield Check("kaslr-keys", "WARN", f"missing {', '.join(missing)}: KASLR'd addresses may be wrong")
