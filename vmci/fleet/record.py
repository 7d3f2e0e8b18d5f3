"""The fleet triage record: one flat, frozen line of facts per dump, and the crash fingerprint.

A :class:`TriageRecord` is what ``vmci triage`` writes, one JSON object per line (JSON Lines).
Its field names are a contract (:data:`TRIAGE_SCHEMA`): a field is never renamed or given another
meaning within a schema version; new fields may be added.  Every field documents itself in its
``metadata["doc"]``, and :func:`json_schema` turns the dataclass into a JSON Schema (draft 2020-12)
so that the README, validators and the records cannot drift apart.

The field set follows what fleet crash-triage tools converge on (crash's ``sys`` banner, ABRT's
problem directories, retrace-server's task results, sdimitro/crashfp's ``note.json``): release,
build id, arch, crash time, uptime, panic string, taint, log tail, a dedup fingerprint, the
KASLR values, missing ranges, the error and the tool version.

:func:`fingerprint` is the dedup key: a hash of the panic line and the first stack frames, with
everything that differs between two occurrences of the same bug masked (addresses, which KASLR
moves; numbers; PIDs; CPU ids; timestamps; ``func+0x1a/0x50`` offsets), in the manner of
syzkaller's ``pkg/report`` title normalisation (addresses to ADDR, numbers to NUM).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EXIT_INTERNAL",
    "TRIAGE_SCHEMA",
    "TriageRecord",
    "fingerprint",
    "json_schema",
    "normalise_frame",
    "normalise_panic",
]

#: Version of the record's field set.  Bumped only when a field changes name or meaning.
TRIAGE_SCHEMA = 1

#: ``exit_code`` of a dump whose triage hit an unexpected exception (a bug in vmci, or a worker
#: that died): BSD sysexits' EX_SOFTWARE, "an internal software error has been detected".
EXIT_INTERNAL = 70


def _doc(text: str, default: Any = None, *, factory: Any = None) -> Any:
    """A dataclass field with its documentation in ``metadata["doc"]``."""
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class TriageRecord:
    """What triage learned about one dump: its identity, the kernel, the crash, the checks, or
    the error that stopped it.  Flat (numbers, strings, lists of strings), picklable, hashable."""

    path: str = _doc("The dump's path as given on the command line (before any --path-map).", "")
    schema: int = _doc("The record's schema version (TRIAGE_SCHEMA).", TRIAGE_SCHEMA)
    size: int | None = _doc("File size in bytes (stat); null when the file cannot be stat'ed.")
    mtime: float | None = _doc("Modification time, seconds since the epoch (stat); with path and size "
                               "it identifies a dump for --resume.")
    format: str | None = _doc("Container: elf, kdump, flattened, migration, libvirt, raw.")
    format_description: str | None = _doc("The reader's one-line description, e.g. "
                                          "'kdump-compressed v6 (zlib)'.")
    arch: str | None = _doc("Guest architecture (ELF e_machine, kdump utsname.machine), e.g. x86_64.")
    release: str | None = _doc("Kernel release: the chosen VMCOREINFO's OSRELEASE.")
    build_id: str | None = _doc("The kernel's GNU build ID: VMCOREINFO BUILD-ID (Linux >= 5.9).")
    vmcoreinfo_source: str | None = _doc("Discovery strategy that gave the chosen VMCOREINFO: "
                                         "elf-note, kdump-header, address-blob, fw-cfg-record, acpi, "
                                         "memory-scan; null when none was found.")
    candidates: int = _doc("Number of valid VMCOREINFO candidates the strategies reached (the same "
                           "note reached two ways counts twice; a stale note from an earlier "
                           "kernel counts).", 0)
    kerneloffset: int | None = _doc("KASLR text offset (KERNELOFFSET), bytes.")
    phys_base: int | None = _doc("Physical minus link address of the kernel text (x86_64 phys_base).")
    kaslr_method: str | None = _doc("Where kerneloffset/phys_base come from: vmcoreinfo, page-tables, "
                                    "... (as `vmci kaslr` reports).")
    kaslr_verdict: str | None = _doc("VMCOREINFO vs page tables: agree, disagree, ... (as `vmci kaslr`).")
    crash_time: int | None = _doc("VMCOREINFO CRASHTIME: seconds since the epoch when the kernel "
                                  "crashed (written only on panic/kexec).")
    uptime: float | None = _doc("Seconds since boot at the crash: the last kernel log record's "
                                "timestamp.")
    panic: str | None = _doc("The panic or Oops line from the kernel log, as printed.")
    taint: str | None = _doc("Taint flags at the crash, as the kernel prints them (e.g. 'G      D W').")
    last_lines: tuple[str, ...] = _doc("The last kernel log lines, oldest first.", factory=tuple)
    fingerprint: str | None = _doc("Dedup key of the crash: fingerprint(panic, first frames); equal "
                                   "for the same cause across KASLR offsets, PIDs, CPUs, times.")
    vmgenid: str | None = _doc("The VM Generation ID (GUID), as QMP query-vm-generation-id prints it.")
    status: str | None = _doc("Worst check result: PASS, WARN or FAIL; null when the dump could not "
                              "be read.")
    failing_checks: tuple[str, ...] = _doc("Names of the checks that FAILed.", factory=tuple)
    warning_checks: tuple[str, ...] = _doc("Names of the checks that WARNed.", factory=tuple)
    memory_size: int | None = _doc("Bytes of guest-physical memory the dump describes.")
    missing_bytes: int | None = _doc("Described bytes that cannot be read (excluded, truncated, "
                                     "corrupt).")
    excluded_bytes: int | None = _doc("Of missing_bytes, those the dump tool left out on purpose "
                                      "(kdump dump level, ELF p_filesz < p_memsz, not in a stream).")
    truncated: bool | None = _doc("The file ends before data it announces.")
    dump_warnings: tuple[str, ...] = _doc("The reader's warnings about the file (first 20).",
                                          factory=tuple)
    error_class: str | None = _doc("Class of the error that stopped triage (FormatError, "
                                   "TruncatedError, ...; another class name for an internal error); "
                                   "null when the dump was read.")
    error: str | None = _doc("The error's message.")
    exit_code: int = _doc("The exit code `vmci analyze` gives this dump: 0 ok, 1 no VMCOREINFO or "
                          "a check FAILed, 3 bad or unsupported dump, 4 address not in the dump, 5 OS "
                          "error, 70 internal error or lost worker.", 0)
    vmci_version: str | None = _doc("The vmci version that wrote the record.")
    elapsed: float | None = _doc("Seconds the triage of this dump took.")

    @property
    def failed(self) -> bool:
        """True when the dump could not be triaged (an error was recorded)."""
        return self.error_class is not None

    @property
    def key(self) -> tuple[str, int | None, float | None]:
        """Identity for --resume: (path, size, mtime)."""
        return (self.path, self.size, self.mtime)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists, field order is the declaration order."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TriageRecord:
        """The record back from :meth:`to_dict` output.  Unknown keys (a newer vmci's additions)
        are ignored, missing ones take their defaults."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in names}
        return cls(**values)


# -- JSON Schema ---------------------------------------------------------------------------------

_SCALARS: dict[Any, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _schema_of(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_schema_of(a) for a in typing.get_args(hint)]
        kinds: list[str] = []
        for p in parts:
            kinds.extend(p["type"] if isinstance(p["type"], list) else [p["type"]])
        return {"type": kinds}
    if origin is tuple:
        item, _ = typing.get_args(hint)
        return {"type": "array", "items": _schema_of(item)}
    if hint is type(None):
        return {"type": "null"}
    return {"type": _SCALARS[hint]}


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of a record line, generated from :class:`TriageRecord`."""
    hints = typing.get_type_hints(TriageRecord)
    props: dict[str, Any] = {}
    for f in dataclasses.fields(TriageRecord):
        props[f.name] = {**_schema_of(hints[f.name]), "description": f.metadata["doc"]}
    props["schema"]["const"] = TRIAGE_SCHEMA
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://vmci.invalid/schema/triage-{TRIAGE_SCHEMA}.json",
        "title": "vmci triage record",
        "description": (TriageRecord.__doc__ or "").strip(),
        "type": "object",
        "properties": props,
        "required": [f.name for f in dataclasses.fields(TriageRecord)],
        "additionalProperties": False,
    }


# -- fingerprint ---------------------------------------------------------------------------------

#: Frames every crash passes through on its way to the panic: reporting and exception plumbing,
#: not the cause (the same idea as crashfp's filter of exception and scheduling frames).
PLUMBING = frozenset({
    "dump_stack", "dump_stack_lvl", "show_stack", "show_trace_log_lvl", "panic", "vpanic",
    "nmi_panic", "__warn", "warn_slowpath_fmt", "report_bug", "handle_bug", "exc_invalid_op",
    "asm_exc_invalid_op", "do_error_trap", "do_trap", "die", "oops_end", "page_fault_oops",
    "kernelmode_fixup_or_oops", "no_context", "__bad_area_nosemaphore", "bad_area_nosemaphore",
    "do_user_addr_fault", "exc_page_fault", "asm_exc_page_fault", "exc_general_protection",
    "asm_exc_general_protection", "do_general_protection", "__die", "__die_body", "crash_kexec",
    "__crash_kexec", "machine_kexec", "asm_sysvec_apic_timer_interrupt", "ret_from_fork",
    "ret_from_fork_asm", "entry_SYSCALL_64_after_hwframe", "do_syscall_64", "x64_sys_call",
})

_TIMESTAMP = re.compile(r"^\s*(?:<\d+>)?\s*\[\s*\d+\.\d+\]\s*")  # [  12.345678]
_CALLER = re.compile(r"^\[\s*[TC]\d+\]\s*")  # [    T1] / [  C0] (CONFIG_PRINTK_CALLER)
_SYM_OFFSET = re.compile(r"\b([A-Za-z_.$][\w.$]*)\+0x[0-9a-fA-F]+(?:/0x[0-9a-fA-F]+)?")
_HEX = re.compile(r"\b(?:0x)?[0-9a-fA-F]*[0-9][0-9a-fA-F]*\b|\b0x[0-9a-fA-F]+\b")
_NUM = re.compile(r"(?<![A-Za-z_])\d+")  # not inside identifiers such as ext4
_SPACE = re.compile(r"\s+")
_FRAME = re.compile(r"^(?:\?\s+)?(?:RIP:\s*(?:[0-9a-fA-F]{4}:)?)?([A-Za-z_.$][\w.$]*)")


def _mask_word(m: re.Match[str]) -> str:
    word = m.group(0)
    if word.startswith("0x") or len(word) >= 8 or not word.isdigit():
        return "ADDR"  # 0x..., a register-width hex word, or hex with letters (a5f3)
    return "NUM"


def normalise_panic(line: str) -> str:
    """The panic/Oops line with what varies between occurrences of one bug masked: the log
    timestamp and caller id dropped, ``func+0x1a/0x50`` cut to ``func``, hexadecimal words and
    numbers of 8 digits or more to ``ADDR``, other numbers (PIDs, CPUs, line numbers, counts) to
    ``NUM``."""
    text = _TIMESTAMP.sub("", line.strip())
    text = _CALLER.sub("", text)
    text = _SYM_OFFSET.sub(r"\1", text)
    text = _HEX.sub(_mask_word, text)
    text = _NUM.sub("NUM", text)
    return _SPACE.sub(" ", text).strip()


def normalise_frame(frame: str) -> str | None:
    """A backtrace line reduced to its function name (``None`` for unreliable ``? func`` frames,
    lines that name no function, and :data:`PLUMBING`).  Module names in brackets are kept."""
    text = _TIMESTAMP.sub("", frame.strip())
    text = _CALLER.sub("", text).strip()
    if not text or text.startswith("?"):
        return None
    m = _FRAME.match(text)
    if m is None:
        return None
    name = m.group(1)
    if name in PLUMBING or name in ("Call", "RIP", "Code", "RSP", "RAX"):
        return None
    module = re.search(r"\[([\w-]+)\]\s*$", text)
    return f"{name} [{module.group(1)}]" if module else name


def fingerprint(panic_line: str | None, frames: Iterable[str] = (), *, depth: int = 5) -> str | None:
    """The crash's dedup key: 16 hex digits of SHA-256 over the normalised panic line and the
    first ``depth`` normalised frames; ``None`` when there is neither a panic line nor a frame."""
    title = normalise_panic(panic_line) if panic_line else ""
    names: list[str] = []
    for f in frames:
        n = normalise_frame(f)
        if n is not None:
            names.append(n)
            if len(names) == depth:
                break
    if not title and not names:
        return None
    text = "\n".join([title, *names])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
