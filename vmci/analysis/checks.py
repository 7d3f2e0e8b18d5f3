"""Named consistency verdicts (PASS / WARN / FAIL) across the places a VMCOREINFO text was found.

Each :class:`Check` has a stable ``name`` (documented in the JSON contract) and a one-line
``detail`` saying why.  FAIL means a reader will get something wrong; WARN that something is
off but readers cope (or a known producer bug, named).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from vmci.core.dump import Dump
from vmci.core.headers import KdumpHeader
from vmci.discover.run import Discovery
from vmci.errors import FormatError
from vmci.kernel.vmcoreinfo import VmcoreInfo

Status = Literal["PASS", "WARN", "FAIL"]
U64 = (1 << 64) - 1
QEMU_PHYS_BASE_BUG = "qemu-phys-base-hex-bug"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail}

    def __str__(self) -> str:
        return f"{self.status} {self.name}: {self.detail}"


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


def run_checks(dump: Dump, disc: Discovery) -> list[Check]:
    """Every check that applies to this dump and discovery."""
    out: list[Check] = []
    out += _strategy_checks(disc)
    text = disc.chosen.text if disc.chosen is not None else None
    out += _sources_agree(disc)
    out += _kdump_checks(dump, disc, text)
    out += _record_size(disc)
    if text is not None:
        out += _text_checks(text, _kaslr_keys(dump, text))
    return out


def _kaslr_keys(dump: Dump, text: VmcoreInfo) -> tuple[str, ...]:
    """The keys the text's architecture (else the dump's, else x86_64's) places a KASLR'd kernel with."""
    from vmci.arch import for_vmcoreinfo, lookup

    arch = for_vmcoreinfo(text) or lookup(dump.arch)
    return arch.kaslr_keys if arch is not None and arch.kaslr_keys else ("KERNELOFFSET", "NUMBER(phys_base)")


def _strategy_checks(disc: Discovery) -> list[Check]:
    out = []
    for f in disc.findings:
        asked = f.source in disc.requested
        present = bool(f.facts.get("present"))
        if f.found:
            out.append(Check(f"strategy:{f.source}", "PASS", "reached a valid VMCOREINFO text"))
        elif asked or (present and f.source in ("acpi", "address-blob", "fw-cfg-record")):
            fails = [s for c in f.rejected for s in c.evidence if s.verdict == "fail"]
            fails += [s for s in f.evidence if s.verdict == "fail" and s.action != "result"]
            why = f"{fails[-1].action}: {fails[-1].detail}" if fails else "nothing found"
            out.append(Check(f"strategy:{f.source}", "FAIL", why))
    if not disc.found:
        out.append(Check("vmcoreinfo-found", "FAIL", disc.reason))
    return out


def _sources_agree(disc: Discovery) -> list[Check]:
    valid = [c for c in disc.candidates if c.text is not None]
    by_source: dict[str, bytes] = {}
    for c in valid:
        assert c.text is not None
        by_source.setdefault(c.source, c.text.raw)
    if len(by_source) < 2:
        if by_source:
            return [Check("sources-agree", "PASS", f"one source only ({next(iter(by_source))})")]
        return []
    ref_src, ref = next(iter(by_source.items()))
    differ = [s for s, raw in by_source.items() if raw != ref]
    if not differ:
        return [Check("sources-agree", "PASS", f"{', '.join(by_source)} hold byte-equal texts")]
    soft = [s for s in differ if by_source[s].rstrip(b"\0") == ref.rstrip(b"\0")]
    hard = [s for s in differ if s not in soft]
    if not hard:
        detail = f"{', '.join(soft)} differ from {ref_src} only in NUL padding"
        return [Check("sources-agree", "WARN", detail)]
    a, b = VmcoreInfo.parse(ref), VmcoreInfo.parse(by_source[hard[0]])
    keys = [k for k in ("OSRELEASE", "BUILD-ID", "KERNELOFFSET", "NUMBER(phys_base)", "CRASHTIME")
            if a.get(k) != b.get(k)]
    what = "; ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in keys) or "other keys differ"
    return [Check("sources-agree", "FAIL", f"{ref_src} and {', '.join(hard)} hold different texts ({what})")]


def _kdump_checks(dump: Dump, disc: Discovery, text: VmcoreInfo | None) -> list[Check]:
    if not isinstance(dump.header, KdumpHeader):
        return []
    out: list[Check] = []
    kh = disc.finding("kdump-header")
    if kh is not None and kh.facts.get("present"):
        agree = kh.facts.get("agree")
        off = kh.facts.get("offset_vmcoreinfo", 0)
        if agree is True:
            out.append(Check("kdump-vmcoreinfo-vs-notes", "PASS",
                             f"offset_vmcoreinfo {off:#x} and the notes blob's note hold the same bytes"))
        elif agree is False:
            out.append(Check("kdump-vmcoreinfo-vs-notes", "FAIL",
                             f"offset_vmcoreinfo {off:#x} (+{kh.facts.get('size_vmcoreinfo')}) and the "
                             "notes blob's VMCOREINFO descriptor at "
                             f"{kh.facts.get('note_desc_offset', 0):#x} "
                             "differ: crash and libkdumpfile read different texts"))
        else:
            out.append(Check("kdump-vmcoreinfo-vs-notes", "WARN",
                             "no VMCOREINFO note in the notes blob: libkdumpfile (v4+) sees none"))
    if text is not None and dump.header.phys_base is not None:
        out.append(_phys_base(dump, text))
    uts = dump.header.utsname.release
    if text is not None and uts is not None:
        rel = text.osrelease
        if not uts:
            out.append(Check("utsname-vs-osrelease", "PASS",
                             f"header utsname.release is empty (QEMU fills only machine); OSRELEASE={rel}"))
        elif uts == rel:
            out.append(Check("utsname-vs-osrelease", "PASS", f"both say {rel}"))
        else:
            out.append(Check("utsname-vs-osrelease", "FAIL", f"header release {uts!r} but OSRELEASE={rel}"))
    return out


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


def _record_size(disc: Discovery) -> list[Check]:
    out = []
    for c in disc.candidates:
        size = c.facts.get("record_size")
        if size is None or c.note_size is None:
            continue
        status: Status = "PASS" if c.note_size <= size else "FAIL"
        out.append(Check(f"note-size-vs-record:{c.source}", status,
                         f"the note is {c.note_size} bytes, the record says {size}"
                         + ("" if status == "PASS" else ": QEMU would drop it")))
    return out


def _text_checks(text: VmcoreInfo,
                 kaslr_keys: tuple[str, ...] = ("KERNELOFFSET", "NUMBER(phys_base)")) -> list[Check]:
    out = []
    lint = [w for w in text.warnings if w.code not in ("missing-kaslr-key",)]
    if lint:
        out.append(Check("vmcoreinfo-lint", "WARN", "; ".join(str(w) for w in lint[:6])
                         + (f"; and {len(lint) - 6} more" if len(lint) > 6 else "")))
    else:
        out.append(Check("vmcoreinfo-lint", "PASS", "the text is as the kernel writes it"))
    missing = [k for k in kaslr_keys if k not in text]
    if not missing:
        out.append(Check("kaslr-keys", "PASS", f"{', '.join(kaslr_keys[:-1])} and {kaslr_keys[-1]} present"))
    elif "NUMBER(phys_base)" in missing and "SYMBOL(phys_base)" in text:
        out.append(Check("kaslr-keys", "WARN", "only the legacy SYMBOL(phys_base) (kernel < 4.10)"
                         + ("; KERNELOFFSET missing" if "KERNELOFFSET" in missing else "")))
    else:
        out.append(Check("kaslr-keys", "WARN",
                         f"missing {', '.join(missing)}: KASLR'd addresses may be wrong"))
    return out


def worst(checks: list[Check]) -> Status:
    order = ("PASS", "WARN", "FAIL")
    return max((c.status for c in checks), key=order.index, default="PASS")
