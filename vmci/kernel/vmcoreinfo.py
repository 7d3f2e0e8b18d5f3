"""The VMCOREINFO text: a lossless model, typed values following the kernel's formats, lint.

The kernel writes ``KEY=value\\n`` lines (``kernel/vmcore_info.c``): ``SYMBOL(x)`` and
``KERNELOFFSET`` in bare hex (``%lx``), ``NUMBER/SIZE/OFFSET/LENGTH`` in decimal
(``NUMBER`` signed; ``NUMBER(VMALLOC_START)`` is the one ``0x%lx``), each line formatted in an
80-byte buffer.  Readers parse numbers with base 0 (auto-detect) and symbols with base 16; we
do the same, strictly (the whole value must be a number, C-style: ``010`` is octal).

:class:`VmcoreInfo` keeps the bytes it was given exactly (``.raw``); lines, values and
warnings are views of them.  The ELF note helpers at the end wrap and unwrap the text as the
kernel's ``VMCOREINFO`` note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from vmci.errors import FormatError, TruncatedError
from vmci.layouts.note import NOTE_HEADER_SIZE, align4, note_header

VMCOREINFO_NOTE_NAME = b"VMCOREINFO"
VMCOREINFO_NOTE_TYPE = 0
#: The kernel formats each line into ``char buf[0x50]`` with ``vscnprintf``: at most 79 bytes
#: including the newline; a longer line is cut there and loses its newline.
KERNEL_LINE_BYTES = 79
#: ``VMCOREINFO_BYTES`` for 4 KiB pages (it is ``PAGE_SIZE`` since 4.13, 4096 before).
VMCOREINFO_BYTES = 4096
#: Keys whose absence makes drgn 0.3.0 refuse the text (``BadDataError``).
DRGN_REQUIRED = ("OSRELEASE", "PAGESIZE", "SYMBOL(swapper_pg_dir)")
#: Keys without which KASLR'd kernel addresses come out wrong.
KASLR_KEYS = ("KERNELOFFSET", "NUMBER(phys_base)")
#: The key that marks a text vmci synthesized (:mod:`vmci.kernel.synthesize`): ``VMCI_SYNTHESIZED=1``.
SYNTHESIZED_KEY = "VMCI_SYNTHESIZED"


def vmcoreinfo_note_size(page_size: int = 4096) -> int:
    """``VMCOREINFO_NOTE_SIZE``: two note headers (the note and the empty final one), the padded
    name, and ``VMCOREINFO_BYTES`` of text."""
    return 2 * NOTE_HEADER_SIZE + align4(len(VMCOREINFO_NOTE_NAME) + 1) + page_size


VMCOREINFO_NOTE_SIZE = vmcoreinfo_note_size(4096)  # 4132

_HEX = re.compile(rb"[+-]?(?:0[xX])?[0-9a-fA-F]+")
_DEC = re.compile(rb"[+-]?[0-9]+")
_AUTO = re.compile(rb"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_BUILD_ID = re.compile(rb"[0-9a-fA-F]+")


def c_int(value: bytes, base: int) -> int | None:
    """Parse ``value`` as C's ``strtoll`` would with ``base`` (0, 10 or 16), requiring the whole
    string to be consumed (as drgn does).  Returns None if it is not such a number."""
    if base == 16:
        return int(value, 16) if _HEX.fullmatch(value) else None
    if base == 10:
        return int(value, 10) if _DEC.fullmatch(value) else None
    m = _AUTO.fullmatch(value)
    if m is None:
        return None
    sign, digits = m.groups()
    if digits[:2] in (b"0x", b"0X"):
        n = int(digits[2:], 16)
    elif digits.startswith(b"0"):
        n = int(digits, 8)
    else:
        n = int(digits, 10)
    return -n if sign == b"-" else n


def _show(b: bytes) -> str:
    return b.decode("ascii", "backslashreplace")


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the text: ``raw`` without its ``\\n`` (a CR stays), at byte ``offset``."""

    number: int
    offset: int
    raw: bytes
    terminated: bool

    @property
    def key(self) -> str | None:
        k, eq, _ = self.raw.partition(b"=")
        return _show(k) if eq else None

    @property
    def value_bytes(self) -> bytes | None:
        _, eq, v = self.raw.partition(b"=")
        return v if eq else None

    @property
    def value(self) -> str | None:
        v = self.value_bytes
        return None if v is None else _show(v)

    @property
    def text(self) -> str:
        return _show(self.raw)


@dataclass(frozen=True, slots=True)
class LintWarning:
    """A problem in the text: a stable ``code``, a one-line ``message``, the 1-based ``line``."""

    code: str
    message: str
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "line": self.line}

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{self.code}: {where}{self.message}"


class PhysBase(NamedTuple):
    """``phys_base`` as the text gives it.

    ``legacy_symbol`` is True for ``SYMBOL(phys_base)`` (kernels before 4.10): then ``value`` is
    the *address* of the kernel variable ``phys_base``, which must be read from memory.
    """

    value: int
    legacy_symbol: bool


# key prefix -> (base, what the kernel prints)
_TYPED_PREFIXES = {"SYMBOL(": 16, "NUMBER(": 0, "SIZE(": 0, "OFFSET(": 0, "LENGTH(": 0}
_TYPED_KEYS = {"PAGESIZE": 0, "KERNELOFFSET": 16, "KERNELOFFPHYS": 16, "CRASHTIME": 10}


def _base_of(key: str) -> int | None:
    if key in _TYPED_KEYS:
        return _TYPED_KEYS[key]
    for prefix, base in _TYPED_PREFIXES.items():
        if key.startswith(prefix) and key.endswith(")"):
            return base
    return None


class VmcoreInfo:
    """A VMCOREINFO text.  Build with :meth:`parse`; never raises on any input bytes."""


    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    @classmethod
    def parse(cls, raw: bytes | bytearray | memoryview | str) -> VmcoreInfo:
        """Model ``raw`` (a ``str`` is encoded as UTF-8).  ``parse(b).raw == b`` always."""
        if isinstance(raw, str):
            raw = raw.encode()
        return cls(bytes(raw))

    # -- structure ----------------------------------------------------------------------------

    @cached_property
    def lines(self) -> tuple[Line, ...]:
        """Every line, in order; a final segment without ``\\n`` is an unterminated line."""
        out: list[Line] = []
        pos = 0
        raw = self.raw
        while pos < len(raw):
            nl = raw.find(b"\n", pos)
            if nl < 0:
                out.append(Line(len(out) + 1, pos, raw[pos:], False))
                break
            out.append(Line(len(out) + 1, pos, raw[pos:nl], True))
            pos = nl + 1
        return tuple(out)

    @cached_property
    def _index(self) -> dict[str, list[Line]]:
        idx: dict[str, list[Line]] = {}
        for line in self.lines:
            key = line.key
            if key is not None:
                idx.setdefault(key, []).append(line)
        return idx

    @property
    def text(self) -> str:
        """The text for display (non-ASCII bytes shown as ``\\xNN``)."""
        return _show(self.raw)

    def keys(self) -> list[str]:
        """Keys in order of first appearance."""
        return list(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VmcoreInfo) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"VmcoreInfo(osrelease={self.get('OSRELEASE')!r}, {len(self.raw)} bytes)"

    def line_of(self, key: str) -> Line | None:
        """The first line carrying ``key`` (crash's ``strstr`` also finds the first)."""
        lines = self._index.get(key)
        return lines[0] if lines else None

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of the first ``key`` line, exactly as written (a trailing CR included)."""
        line = self.line_of(key)
        return default if line is None else line.value

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key``, in order (duplicates are a lint warning)."""
        return [line.value or "" for line in self._index.get(key, [])]

    # -- typed values -------------------------------------------------------------------------

    def _int(self, key: str, base: int) -> int | None:
        line = self.line_of(key)
        if line is None:
            return None
        raw = line.value_bytes or b""
        value = c_int(raw[:-1] if raw.endswith(b"\r") else raw, base)
        if value is None:
            kind = {16: "hex", 10: "decimal", 0: "integer"}[base]
            raise FormatError(f"VMCOREINFO value {_show(raw)!r} is not a {kind} number",
                              field=key, offset=line.offset)
        return value

    def symbol(self, name: str) -> int | None:
        """``SYMBOL(name)``: a runtime (KASLR-shifted) kernel address, bare hex."""
        return self._int(f"SYMBOL({name})", 16)

    def number(self, name: str) -> int | None:
        """``NUMBER(name)``: signed, base auto-detected (decimal; ``VMALLOC_START`` is 0x-hex)."""
        return self._int(f"NUMBER({name})", 0)

    def offset(self, struct: str, member: str) -> int | None:
        """``OFFSET(struct.member)``."""
        return self._int(f"OFFSET({struct}.{member})", 0)

    def size(self, name: str) -> int | None:
        """``SIZE(name)``."""
        return self._int(f"SIZE({name})", 0)

    def length(self, name: str) -> int | None:
        """``LENGTH(name)``."""
        return self._int(f"LENGTH({name})", 0)

    @property
    def osrelease(self) -> str | None:
        v = self.get("OSRELEASE")
        return None if v is None else v.removesuffix("\r")

    @property
    def pagesize(self) -> int | None:
        return self._int("PAGESIZE", 0)

    @property
    def build_id(self) -> str | None:
        v = self.get("BUILD-ID")
        return None if v is None else v.removesuffix("\r")

    @property
    def kerneloffset(self) -> int | None:
        """``KERNELOFFSET``: runtime minus link address of kernel text (bare hex)."""
        return self._int("KERNELOFFSET", 16)

    @property
    def phys_base_key(self) -> str:
        """The ``NUMBER()`` name of what this text's architecture calls ``phys_base``:
        ``PHYS_OFFSET`` in an arm64 text (:attr:`vmci.arch.Arch.phys_base_key`), else ``phys_base``."""
        from vmci.arch import for_vmcoreinfo

        arch = for_vmcoreinfo(self)
        return arch.phys_base_key if arch is not None and arch.phys_base_key else "phys_base"

    @property
    def phys_base(self) -> PhysBase | None:
        """``NUMBER(phys_base)``, else the legacy ``SYMBOL(phys_base)`` flagged as an address; in an
        arm64 text ``NUMBER(PHYS_OFFSET)`` (:attr:`phys_base_key`)."""
        n = self.number("phys_base")
        if n is not None:
            return PhysBase(n, False)
        key = self.phys_base_key
        if key != "phys_base":
            n = self.number(key)
            return None if n is None else PhysBase(n, False)
        s = self.symbol("phys_base")
        return None if s is None else PhysBase(s, True)

    @property
    def crashtime(self) -> int | None:
        """``CRASHTIME``: seconds since the epoch, present only after a panic."""
        return self._int("CRASHTIME", 10)

    @property
    def pgtable_l5_enabled(self) -> bool | None:
        n = self.number("pgtable_l5_enabled")
        return None if n is None else bool(n)

    def _safe(self, fn: Any) -> Any:
        try:
            return fn()
        except FormatError:
            return None

    # -- lint ---------------------------------------------------------------------------------

    @cached_property
    def warnings(self) -> tuple[LintWarning, ...]:
        """Everything a producer or reader may trip over; empty for a kernel-made text."""
        return tuple(_lint(self))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: typed values (addresses as integers, as in every vmci JSON),
        entries, warnings."""
        pb = self._safe(lambda: self.phys_base)
        return {
            "size": len(self.raw),
            "osrelease": self.osrelease,
            "build_id": self.build_id,
            "pagesize": self._safe(lambda: self.pagesize),
            "kerneloffset": self._safe(lambda: self.kerneloffset),
            "phys_base": None if pb is None else pb.value,
            "phys_base_legacy_symbol": None if pb is None else pb.legacy_symbol,
            "crashtime": self._safe(lambda: self.crashtime),
            "pgtable_l5_enabled": self._safe(lambda: self.pgtable_l5_enabled),
            "swapper_pg_dir": self._safe(lambda: self.symbol("swapper_pg_dir")),
            "entries": [{"line": ln.number, "key": ln.key, "value": ln.value}
                        for ln in self.lines if ln.key is not None],
            "warnings": [w.to_dict() for w in self.warnings],
            "text": self.text,
        }


def is_synthesized(text: VmcoreInfo | bytes | str) -> bool:
    """True for a text vmci synthesized from the page tables (it carries ``VMCI_SYNTHESIZED=1``):
    its values are vmci's reading of memory, not the kernel's word."""
    vi = text if isinstance(text, VmcoreInfo) else VmcoreInfo.parse(text)
    return vi.get(SYNTHESIZED_KEY) == "1"


def _lint(info: VmcoreInfo) -> list[LintWarning]:
    out: list[LintWarning] = []
    raw = info.raw
    body = raw.rstrip(b"\0")
    if not body:
        what = "the text is empty" if not raw else f"the text is {len(raw)} NUL bytes"
        return [LintWarning("empty", what)]
    lines = [ln for ln in info.lines if ln.offset < len(body)]  # drop a pure-NUL tail line
    if len(body) < len(raw):
        out.append(LintWarning(
            "nul-padding",
            f"{len(raw) - len(body)} NUL bytes follow the text (descsz counts padding; the kernel's "
            "does not)", lines[-1].number))
    if not body.startswith(b"OSRELEASE="):
        out.append(LintWarning("osrelease-not-first",
                               "the text does not start with OSRELEASE= as the kernel's does; "
                               "memory scanners (volatility) require it", 1))
    crlf = [ln.number for ln in lines if ln.raw.endswith(b"\r")]
    if crlf:
        out.append(LintWarning(
            "crlf", f"{len(crlf)} line(s) end in CR LF: drgn rejects values followed by CR "
                    "('number in VMCOREINFO is invalid', \"couldn't parse BUILD-ID\")", crlf[0]))
    last = lines[-1]
    if not last.terminated:
        shown = _show(last.raw.rstrip(b"\0"))[:40]
        out.append(LintWarning("no-final-newline",
                               f"the last line {shown!r} has no newline: drgn ignores it", last.number))
    seen: dict[str, int] = {}
    for ln in lines:
        content = ln.raw.rstrip(b"\0") if ln is last else ln.raw
        if len(content) + 1 > KERNEL_LINE_BYTES:
            out.append(LintWarning(
                "line-too-long",
                f"{len(content) + 1} bytes with the newline; the kernel's 80-byte line buffer "
                f"allows {KERNEL_LINE_BYTES} (longer lines are cut and lose their newline)", ln.number))
        stripped = content.removesuffix(b"\r")
        if b"\0" in stripped:
            out.append(LintWarning("nul-inside", "NUL byte inside the line", ln.number))
        if any(b < 0x20 or b > 0x7E for b in stripped.replace(b"\0", b"")):
            out.append(LintWarning("non-printable", "control or non-ASCII bytes in the line", ln.number))
        key = ln.key
        if key is None:
            what = "empty line" if not stripped else f"{_show(stripped)[:40]!r}"
            out.append(LintWarning("no-equals", f"line without '=' ({what}) is skipped by readers",
                                   ln.number))
            continue
        if key in seen:
            out.append(LintWarning(
                "duplicate-key", f"{key} repeats line {seen[key]}: crash reads the first, drgn the last",
                ln.number))
        else:
            seen[key] = ln.number
        out.extend(_check_value(ln, key))
    terminated_keys = {ln.key for ln in lines if ln.terminated}
    for key in DRGN_REQUIRED:
        if key not in terminated_keys:
            why = ("is only on the unterminated last line, which drgn ignores" if key in info
                   else "is missing")
            out.append(LintWarning("missing-key", f"{key} {why}: drgn requires it (BadDataError)"))
    if "KERNELOFFSET" not in info:
        out.append(LintWarning("missing-kaslr-key",
                               "KERNELOFFSET is missing: readers assume 0, wrong under KASLR"))
    key = info.phys_base_key
    if key != "phys_base":
        out.extend(_arch_keys(info))
    elif "NUMBER(phys_base)" not in info and "NUMBER(VA_BITS)" not in info:
        if "SYMBOL(phys_base)" in info:
            msg = ("only the legacy SYMBOL(phys_base) (kernel < 4.10), the variable's address: drgn "
                   "and volatility need NUMBER(phys_base) to place the kernel physically")
        else:
            msg = ("NUMBER(phys_base) is missing: kernel-text physical addresses (swapper_pg_dir) "
                   "cannot be computed without a page-table walk")
        out.append(LintWarning("missing-kaslr-key", msg))
    page = info._safe(lambda: info.pagesize) or VMCOREINFO_BYTES
    if len(body) > max(VMCOREINFO_BYTES, page):
        out.append(LintWarning("too-large", f"{len(body)} bytes exceed VMCOREINFO_BYTES "
                                            f"({max(VMCOREINFO_BYTES, page)})"))
    return out


def _arch_keys(info: VmcoreInfo) -> list[LintWarning]:
    """The keys an architecture other than x86_64 places its kernel with (:attr:`vmci.arch.Arch.
    vmcoreinfo_keys`: arm64 ``kimage_voffset``, ``PHYS_OFFSET``, ``VA_BITS``...), as
    ``missing-kaslr-key`` warnings."""
    from vmci.arch import for_vmcoreinfo

    arch = for_vmcoreinfo(info)
    if arch is None:
        return []
    missing = [k for k in arch.kaslr_keys if k != "KERNELOFFSET" and k not in info]
    if not missing:
        return []
    return [LintWarning("missing-kaslr-key", f"{', '.join(missing)} missing: {arch.name} readers (crash, "
                                             "drgn, makedumpfile) place the kernel with them")]


def _check_value(ln: Line, key: str) -> list[LintWarning]:
    raw = (ln.value_bytes or b"").rstrip(b"\0").removesuffix(b"\r")
    if key == "BUILD-ID":
        if not _BUILD_ID.fullmatch(raw) or len(raw) % 2:
            return [LintWarning("bad-value", f"BUILD-ID {_show(raw)!r} is not hex bytes", ln.number)]
        return []
    base = _base_of(key)
    if base is None:
        return []
    value = c_int(raw, base)
    if value is None:
        kind = {16: "bare hex", 10: "decimal", 0: "a number"}[base]
        return [LintWarning("bad-value", f"{key}={_show(raw)!r} is not {kind}", ln.number)]
    if key == "PAGESIZE" and (value <= 0 or value & (value - 1)):
        return [LintWarning("bad-value", f"PAGESIZE {value} is not a power of two", ln.number)]
    return []


# -- the ELF note -----------------------------------------------------------------------------


class ParsedNote(NamedTuple):
    name: str
    type: int
    desc: bytes
    total_size: int


def parse_note(buf: bytes | bytearray | memoryview, offset: int = 0,
               byteorder: str = "little") -> ParsedNote:
    """Parse the ELF note at ``buf[offset:]``: ``(name, type, desc, total_size)``.

    ``total_size`` includes the header and the padding of name and descriptor.  The whole
    padded note must lie inside ``buf``; otherwise :class:`TruncatedError` names the field.
    """
    decl = note_header(byteorder)
    if offset < 0 or offset + NOTE_HEADER_SIZE > len(buf):
        raise TruncatedError("note header runs past the end of the buffer", field="Nhdr", offset=offset)
    hdr = decl.parse(bytes(buf[offset:offset + NOTE_HEADER_SIZE]))
    name_off = offset + NOTE_HEADER_SIZE
    desc_off = name_off + align4(hdr.namesz)
    end = desc_off + align4(hdr.descsz)
    if desc_off > len(buf):
        raise TruncatedError(f"note name of {hdr.namesz} bytes runs past the end of the buffer",
                             field="n_namesz", offset=offset)
    if end > len(buf):
        raise TruncatedError(f"note descriptor of {hdr.descsz} bytes runs past the end of the buffer",
                             field="n_descsz", offset=offset + 4)
    name = bytes(buf[name_off:name_off + hdr.namesz])
    if name.endswith(b"\0"):
        name = name[:-1]
    return ParsedNote(_show(name), hdr.type, bytes(buf[desc_off:desc_off + hdr.descsz]), end - offset)


def build_note(text: bytes | str | VmcoreInfo, byteorder: str = "little") -> bytes:
    """The kernel's VMCOREINFO note for ``text``: header (namesz 11, descsz, type 0),
    ``"VMCOREINFO\\0"`` padded to 12, the text padded to 4.  No trailing empty note."""
    if isinstance(text, VmcoreInfo):
        desc = text.raw
    elif isinstance(text, str):
        desc = text.encode()
    else:
        desc = bytes(text)
    name = VMCOREINFO_NOTE_NAME + b"\0"
    hdr = note_header(byteorder).build({"namesz": len(name), "descsz": len(desc),
                                        "type": VMCOREINFO_NOTE_TYPE})
    return b"".join((hdr, name.ljust(align4(len(name)), b"\0"), desc.ljust(align4(len(desc)), b"\0")))
