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
from vmci.core.headers import KdumpHeader
from vmci.core.record import Record
from vmci.discover import strategy
from vmci.discover.guest_note import RESULT
from vmci.discover.run import Discovery
from vmci.errors import FormatError
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
    """The texts the strategies found are byte-equal (NUL padding aside: WARN)."""
    valid = [c for c in ctx.discovery.candidates if c.text is not None]
    by_source: dict[str, bytes] = {}
    for c in valid:
        assert c.text is not None
        by_source.setdefault(c.source, c.text.raw)
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
