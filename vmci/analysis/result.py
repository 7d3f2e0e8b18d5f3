"""Typed results of the analysis: what ``vmci analyze``, ``info``, ``vmgenid`` and ``vmcoreinfo`` answer.

Every result is an immutable :class:`~vmci.core.record.Record` with a docstring per field.  Its
``to_dict()`` is the JSON of schema 1 (``vmci analyze --json`` byte for byte);
:mod:`vmci.analysis.schema` generates the JSON Schema from the same fields; :mod:`vmci.cli.render`
prints them for people.  What the types cannot say is declared on the field with
:data:`~typing.Annotated` metadata (read by :func:`~vmci.core.record.field_meta`):

- ``key``: the JSON key when it is not the field name (``"OSRELEASE"``);
- ``hex``: an address, offset or size, shown in hexadecimal; ``signed``: negative values are
  shown with their two's complement too;
- ``json=False``: kept for library users, not serialized in schema 1;
- ``empty``: what a None value serializes as (``{}`` for an absent section).

Each result that decides a command's exit status says so (``exit_code``: 0, or 1 for a negative
answer, as :mod:`vmci.errors` documents); the CLI only maps it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal, NewType, Protocol

from vmci.core.evidence import Evidence, Verdict
from vmci.core.record import Record
from vmci.errors import NotFoundError
from vmci.kernel.vmcoreinfo import LintWarning

#: Version of the JSON contract (bumped on an incompatible change).
SCHEMA: Literal[1] = 1

Status = Literal["PASS", "WARN", "FAIL"]
#: The name of a registered discovery strategy (:data:`vmci.discover.NAMES`).
StrategyName = NewType("StrategyName", str)

HEX: Mapping[str, Any] = {"hex": True}
SIGNED_HEX: Mapping[str, Any] = {"hex": True, "signed": True}
NOT_IN_JSON: Mapping[str, Any] = {"json": False}
U64 = (1 << 64) - 1

#: Header facts (``Dump.facts``, any container) whose integers are addresses, offsets, sizes or
#: page numbers.  The typed per-container headers will declare this on their fields.
HEX_FACTS = frozenset({
    "base", "block_size", "decompressed_size", "end_pfn", "max_mapnr", "offset", "offset_eraseinfo",
    "offset_note", "offset_vmcoreinfo", "paddr", "page_size", "phys_base", "phys_base_signed", "size",
    "size_eraseinfo", "size_note", "size_vmcoreinfo", "start_pfn", "stream_end", "stream_offset",
    "sub_hdr_size", "vmcoreinfo_addr", "vmdesc_offset", "vmgenid_addr",
})


def key(name: str, **more: Any) -> Mapping[str, Any]:
    """Field metadata: serialized under ``name``."""
    return {"key": name, **more}


# -- the dump ------------------------------------------------------------------------------------


class MemoryRange(Record):
    """A range of guest-physical memory the dump holds."""

    start: Annotated[int, HEX]
    """First guest-physical address."""
    size: Annotated[int, HEX]
    """Length in bytes."""


class DumpSummary(Record):
    """The dump as its container describes it (the ``dump`` section)."""

    path: str
    """The file as given."""
    format: str
    """Container format (``elf``, ``kdump``, ``kdump-flattened``, ``raw``, ``qemu-migration``, ...)."""
    description: str
    """One line: container, version, producer."""
    arch: str
    """Architecture (``x86_64``, ``i386``, ``unknown``)."""
    byte_order: Literal["little", "big"]
    """Byte order of the guest."""
    memory_size: int
    """Bytes of guest-physical memory the dump holds."""
    ranges: tuple[MemoryRange, ...]
    """The guest-physical ranges it holds."""
    warnings: tuple[str, ...]
    """What the reader noticed (truncation, quirks)."""
    converted: Annotated[dict[str, Any] | None, {"optional": True}] = None
    """A file ``vmci convert`` wrote: its record of the source and what it repaired (absent
    otherwise)."""


class NoteRecord(Record):
    """An ELF note of the dump."""

    name: str
    """Note name (``CORE``, ``QEMU``, ``VMCOREINFO``)."""
    type: int
    """``n_type``."""
    size: int
    """Descriptor size in bytes."""
    offset: Annotated[int | None, HEX]
    """File offset of the note, when it has one."""
    where: str
    """Which segment or blob holds it."""


class DumpInfo(Record):
    """What ``vmci info`` shows: everything the container says, nothing inferred."""

    SCHEMA_VERSION = SCHEMA

    path: str
    """The file as given."""
    format: str
    """Container format."""
    description: str
    """One line: container, version, producer."""
    arch: str
    """Architecture."""
    byte_order: Literal["little", "big"]
    """Byte order of the guest."""
    memory_size: int
    """Bytes of guest-physical memory the dump holds."""
    ranges: tuple[MemoryRange, ...]
    """The guest-physical ranges it holds."""
    notes: tuple[NoteRecord, ...]
    """Its ELF notes (or the kdump notes blob's)."""
    cpus: tuple[dict[str, Any], ...]
    """Each vCPU's saved state."""
    facts: Annotated[dict[str, Any], {"hex_keys": HEX_FACTS}]
    """Header fields of the container, by name."""
    warnings: tuple[str, ...]
    """What the reader noticed."""


# -- the VMCOREINFO -------------------------------------------------------------------------------


class KeyValues(Record):
    """The values people ask for first, typed (None when absent or malformed)."""

    osrelease: Annotated[str | None, key("OSRELEASE")]
    """``OSRELEASE``: the kernel release."""
    build_id: Annotated[str | None, key("BUILD-ID")]
    """``BUILD-ID``: the kernel's GNU build ID, hex."""
    pagesize: Annotated[int | None, key("PAGESIZE")]
    """``PAGESIZE``."""
    kerneloffset: Annotated[int | None, key("KERNELOFFSET"), HEX]
    """``KERNELOFFSET``: the KASLR slide of the kernel image."""
    phys_base: Annotated[int | None, SIGNED_HEX]
    """``NUMBER(phys_base)`` (None for the legacy ``SYMBOL(phys_base)`` of kernels < 4.10)."""
    crashtime: Annotated[int | None, key("CRASHTIME")]
    """``CRASHTIME``: seconds since the epoch, written on the panic path."""


class VmcoreinfoSection(Record):
    """The text discovery chose (the ``vmcoreinfo`` section)."""

    found: bool
    """Whether a strategy found a valid text."""
    source: StrategyName | None
    """The strategy whose text was chosen."""
    paddr: Annotated[int | None, HEX]
    """Guest-physical address of its note, when it came from guest memory."""
    note_size: int | None
    """Size of its note, padded, in bytes."""
    text: str | None
    """The text as found."""
    values: dict[str, str | None]
    """Every key with its first value as written (the first line wins, as crash reads it)."""
    key_values: Annotated[KeyValues | None, {"empty": {}}]
    """The key values, typed (``{}`` in JSON without a text)."""
    warnings: tuple[LintWarning, ...]
    """Lint of the text: what a producer or reader may trip over."""
    reason: str
    """Why this text (or why none)."""


class CandidateRecord(Record):
    """A text one strategy found, or a hit it rejected."""

    source: StrategyName
    """The strategy."""
    paddr: Annotated[int | None, HEX]
    """Guest-physical address of its note."""
    note_size: int | None
    """Size of its note, padded."""
    data_paddr: Annotated[int | None, HEX]
    """Guest-physical address of the kernel's raw-text page, when seen."""
    valid: bool
    """Whether it holds a usable text."""
    chosen: bool
    """Whether it is the text discovery chose."""
    osrelease: str | None
    """Its ``OSRELEASE``."""
    text_size: int | None
    """Its text's size in bytes."""
    facts: dict[str, int | str | bool | None]
    """What the strategy recorded about it (scalars only)."""


class ProvenanceStep(Record):
    """One step of one strategy, in the order the strategies ran (the last ones are the choice's)."""

    strategy: str
    """The strategy (or ``choice``)."""
    action: str
    """What was checked or done."""
    paddr: Annotated[int | None, HEX]
    """The guest-physical address it is about."""
    detail: str
    """The outcome, in words."""
    verdict: Verdict
    """ok, warn, fail or info."""
    code: Annotated[str, NOT_IN_JSON] = ""
    """The step's stable code, when it has one."""


class CheckResult(Record):
    """A named consistency verdict."""

    name: str
    """Stable name (``sources-agree``, ``strategy:acpi``, ...)."""
    status: Status
    """PASS, WARN (off but readers cope, or a known producer bug) or FAIL (a reader gets it wrong)."""
    detail: str
    """Why, in one line."""

    def __str__(self) -> str:
        return f"{self.status} {self.name}: {self.detail}"


# -- VM generation ID -----------------------------------------------------------------------------


class VmgenidResult(Record):
    """The VM Generation ID and the walk that found it (or did not)."""

    guid: uuid.UUID | None
    """The GUID (printed as QMP's query-vm-generation-id does)."""
    paddr: Annotated[int | None, HEX]
    """Guest-physical address of the GUID (page + 40)."""
    source: Literal["acpi", "address-blob"] | None
    """How it was reached: the SSDT VMGENID's VGIA, or the saved ``etc/vmgenid_addr``."""
    evidence: Annotated[Evidence, NOT_IN_JSON]
    """Every step of the walk."""

    @property
    def found(self) -> bool:
        return self.guid is not None

    @property
    def exit_code(self) -> int:
        """0 when found, 1 (a negative answer) when not."""
        return 0 if self.found else 1

    def require(self) -> VmgenidResult:
        """Itself when found; else :class:`~vmci.errors.NotFoundError` naming the failed step."""
        if not self.found:
            last = self.evidence.last_failure()
            raise NotFoundError(f"no VM generation ID: {last.action}: {last.detail}" if last
                                else "no VM generation ID")
        return self

    def report(self) -> dict[str, Any]:
        """The JSON of ``vmci vmgenid --json``: the result and its evidence."""
        return {"schema": SCHEMA, **self.to_dict(), "evidence": self.evidence.to_dict()}


# -- the whole analysis ---------------------------------------------------------------------------


class KaslrSection(Protocol):
    """The ``kaslr`` section: KERNELOFFSET and phys_base from the text and the page tables."""

    def to_dict(self) -> dict[str, Any]: ...


class KaslrDict(Record):
    """A ``kaslr`` section given as its JSON dict (:func:`vmci.kernel.kaslr.kaslr_section`)."""

    data: dict[str, Any]
    """The section as JSON."""

    def to_dict(self) -> dict[str, Any]:
        return self.data


class AnalyzeSummary(Record):
    """The flat answer a fleet wants per dump (one row, no provenance)."""

    path: str
    """The dump file."""
    format: str
    """Container format."""
    arch: str
    """Architecture."""
    found: bool
    """Whether a VMCOREINFO text was found."""
    source: StrategyName | None
    """The strategy whose text was chosen."""
    candidates: int
    """How many valid texts the strategies found."""
    osrelease: str | None
    """``OSRELEASE``."""
    build_id: str | None
    """``BUILD-ID``."""
    crashtime: int | None
    """``CRASHTIME``."""
    kerneloffset: Annotated[int | None, HEX]
    """KERNELOFFSET: the text's, else the page tables'."""
    phys_base: Annotated[int | None, SIGNED_HEX]
    """phys_base: the text's, else the page tables'."""
    kaslr_method: str | None
    """Where those two came from."""
    vmgenid: str | None
    """The VM Generation ID."""
    status: Status
    """The worst check status."""
    failing_checks: tuple[str, ...]
    """Names of the checks that FAILed."""


class PanicSummary(Record):
    """What a crash looks like in the kernel log (``analyze``'s optional ``panic`` section)."""

    panic: str | None
    """The ``Kernel panic - not syncing: ...`` line (the last one), without the timestamp."""
    events: tuple[str, ...]
    """Every panic / Oops / BUG / warning line, oldest first."""
    first_event: str | None
    """The first of them: usually the cause (an Oops, then the panic it led to)."""
    taint: str | None
    """The ``Tainted:`` letters as printed (``"G        W"``), ``""`` for ``Not tainted``."""
    taint_flags: tuple[str, ...]
    """The decoded meaning of each set letter (:data:`TAINT_FLAGS`)."""
    frames: tuple[str, ...]
    """Function names of the first call trace after the first event (``? `` guesses dropped)."""
    last_lines: tuple[str, ...]
    """The last records before the panic line (or the end of the log), the panic line included."""
    crashtime: int | None
    """``CRASHTIME`` of the kernel's VMCOREINFO (seconds since the epoch), when it crashed into kexec."""
    uptime: float | None
    """Seconds since boot at the last record."""


class AnalyzeResult(Record):
    """Everything ``vmci analyze`` finds: discovery, checks, KASLR, the VM generation ID."""

    SCHEMA_VERSION = SCHEMA

    dump: DumpSummary
    """The dump as its container describes it."""
    vmcoreinfo: VmcoreinfoSection
    """The chosen text."""
    kaslr: KaslrSection
    """KERNELOFFSET and phys_base, from the text and (with a paging vCPU) the page tables."""
    vmgenid: VmgenidResult | None
    """The VM Generation ID, when one was looked for and found."""
    checks: tuple[CheckResult, ...]
    """Every check that applied, in registry order."""
    status: Status
    """The worst check status."""
    provenance: tuple[ProvenanceStep, ...]
    """Each strategy's steps, then the choice's."""
    candidates: tuple[CandidateRecord, ...]
    """Every candidate and rejected hit, strategy by strategy."""
    panic: Annotated[PanicSummary | None, {"optional": True}] = None
    """The crash in the kernel log (panic / Oops / BUG / warning lines, taint, call trace, the
    last lines, CRASHTIME, uptime); absent when the log holds none or cannot be read."""

    @property
    def found(self) -> bool:
        return self.vmcoreinfo.found

    @property
    def failing_checks(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.checks if c.status == "FAIL")

    @property
    def exit_code(self) -> int:
        """0 when a text was found and no check FAILed, else 1 (a negative answer)."""
        return 0 if self.found and self.status != "FAIL" else 1

    def summary(self) -> AnalyzeSummary:
        """The flat record: found, source, release, KASLR values, status, failing checks."""
        kv = self.vmcoreinfo.key_values
        k = self.kaslr.to_dict()
        return AnalyzeSummary(
            path=self.dump.path, format=self.dump.format, arch=self.dump.arch, found=self.found,
            source=self.vmcoreinfo.source, candidates=sum(c.valid for c in self.candidates),
            osrelease=kv.osrelease if kv else None, build_id=kv.build_id if kv else None,
            crashtime=kv.crashtime if kv else None, kerneloffset=k.get("kerneloffset"),
            phys_base=k.get("phys_base"), kaslr_method=k.get("method"),
            vmgenid=str(self.vmgenid.guid) if self.vmgenid and self.vmgenid.guid else None,
            status=self.status, failing_checks=self.failing_checks)

    def to_json(self) -> str:
        """``vmci analyze --json``."""
        return json.dumps(self.to_dict(), indent=2)


def kaslr_exit_code(section: Mapping[str, Any]) -> int:
    """``vmci kaslr``'s answer: 1 (negative) when there is no KERNELOFFSET or the VMCOREINFO and
    the page tables conflict, else 0.  ``section`` is the ``kaslr`` JSON object."""
    return 1 if section.get("kerneloffset") is None or section.get("verdict") == "conflict" else 0


# -- the text for drgn and other readers ----------------------------------------------------------


class VmcoreinfoText(Record):
    """The VMCOREINFO text to give a reader: as found, or synthesized when none survived."""

    raw: bytes
    """The text, byte for byte."""
    source: str
    """The strategy it came from, or ``synthesized``."""
    paddr: int | None
    """Guest-physical address of its note, when it came from guest memory."""
    reason: str
    """Why this text."""
    sources: dict[str, str] | None = None
    """For a synthesized text: where each value came from."""

    @property
    def synthesized(self) -> bool:
        return self.source == "synthesized"

    def provenance(self) -> dict[str, Any]:
        """What drgn integration records about the text (``source``, ``paddr``, ``reason``, ...)."""
        if self.synthesized:
            return {"source": self.source, "paddr": None, "synthesized": True, "sources": self.sources,
                    "reason": self.reason}
        return {"source": self.source, "paddr": self.paddr, "reason": self.reason, "synthesized": False}


#: Every result record with a JSON form (described by :mod:`vmci.analysis.schema`).
RECORDS: tuple[type[Record], ...] = (
    MemoryRange, DumpSummary, NoteRecord, DumpInfo, KeyValues, VmcoreinfoSection, CandidateRecord,
    ProvenanceStep, CheckResult, VmgenidResult, AnalyzeSummary, AnalyzeResult, PanicSummary)
