"""``vmci analyze``: discovery, checks, KASLR values and the VM generation ID as one typed result.

:func:`analyze` returns an :class:`~vmci.analysis.result.AnalyzeResult`; its ``to_dict()`` is the
versioned JSON contract (schema 1, :mod:`vmci.analysis.schema`): addresses and offsets are
integers, ``source`` is one of the registered strategies (:data:`vmci.discover.NAMES`).
:func:`dump_info` is what ``vmci info`` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vmci.analysis.checks import run_checks, worst
from vmci.analysis.kaslr import kaslr_section
from vmci.analysis.result import (
    AnalyzeResult,
    CandidateRecord,
    DumpInfo,
    DumpSummary,
    KaslrDict,
    KeyValues,
    MemoryRange,
    NoteRecord,
    PanicSummary,
    ProvenanceStep,
    StrategyName,
    VmcoreinfoSection,
    VmgenidResult,
)
from vmci.core.dump import Dump
from vmci.core.evidence import Step
from vmci.discover.finding import Candidate
from vmci.discover.guest_note import RESULT
from vmci.discover.run import Discovery, find_vmcoreinfo
from vmci.errors import VmciError, or_none
from vmci.kernel.symbols import KernelSymbols
from vmci.kernel.vmcoreinfo import VmcoreInfo

#: How many rejected hits per strategy the provenance shows.
MAX_REJECTED_SHOWN = 8


def key_values(text: VmcoreInfo) -> KeyValues:
    """The values the CLI shows, typed (numbers as integers; None when absent or malformed)."""
    pb = or_none(lambda: text.phys_base)
    return KeyValues(
        osrelease=text.osrelease,
        build_id=text.build_id,
        pagesize=or_none(lambda: text.pagesize),
        kerneloffset=or_none(lambda: text.kerneloffset),
        phys_base=None if pb is None or pb.legacy_symbol else pb.value,
        crashtime=or_none(lambda: text.crashtime),
    )


def _values(text: VmcoreInfo) -> dict[str, str | None]:
    """Every key with its first value as written (the first line wins, as crash reads it)."""
    keys = text.keys()
    return {k: text.get(k) for k in keys}


def _ranges(dump: Dump) -> tuple[MemoryRange, ...]:
    return tuple(MemoryRange(r.start, r.size) for r in dump.memory.ranges)


def dump_summary(dump: Dump) -> DumpSummary:
    """The ``dump`` section of the analysis."""
    return DumpSummary(path=str(dump.path), format=dump.format, description=dump.description, arch=dump.arch,
                       byte_order=dump.byte_order,  # type: ignore[arg-type]
                       memory_size=dump.memory.size, ranges=_ranges(dump), warnings=tuple(dump.warnings),
                       converted=c.to_dict() if (c := getattr(dump.header, "converted", None)) else None)


def dump_info(dump: Dump) -> DumpInfo:
    """What ``vmci info`` shows: everything the container says, nothing inferred."""
    return DumpInfo(
        path=str(dump.path), format=dump.format, description=dump.description, arch=dump.arch,
        byte_order=dump.byte_order,  # type: ignore[arg-type]
        memory_size=dump.memory.size, ranges=_ranges(dump),
        notes=tuple(NoteRecord(n.name, n.type, len(n.desc), n.offset, n.where) for n in dump.notes),
        cpus=tuple(c.to_dict() for c in dump.cpus), facts=dump.facts, warnings=tuple(dump.warnings))


def _candidate(c: Candidate, chosen: Candidate | None) -> CandidateRecord:
    return CandidateRecord(
        source=StrategyName(c.source), paddr=c.paddr, note_size=c.note_size, data_paddr=c.data_paddr,
        valid=c.valid, chosen=c is chosen,
        osrelease=c.text.osrelease if c.text is not None else None,
        text_size=len(c.text.raw) if c.text is not None else None,
        facts={k: v for k, v in c.facts.items() if isinstance(v, int | str | bool | type(None))},
    )


def _provenance(disc: Discovery) -> tuple[ProvenanceStep, ...]:
    out: list[ProvenanceStep] = []

    def add(strategy: str, steps: Iterable[Step]) -> None:
        out.extend(ProvenanceStep(strategy, s.action, s.paddr, s.detail, s.verdict, s.code) for s in steps)

    for f in disc.findings:
        chosen = f.chosen
        add(f.source, [s for s in f.evidence if s.code != RESULT])
        for c in ([chosen] if chosen is not None else []) + f.rejected[:MAX_REJECTED_SHOWN]:
            add(f.source, c.evidence)
        add(f.source, [s for s in f.evidence if s.code == RESULT])
    add("choice", disc.evidence)
    return tuple(out)


def vmcoreinfo_section(disc: Discovery) -> VmcoreinfoSection:
    """The ``vmcoreinfo`` section: the chosen text, its values and lint, the reason."""
    chosen = disc.chosen
    text = chosen.text if chosen is not None else None
    return VmcoreinfoSection(
        found=chosen is not None,
        source=StrategyName(chosen.source) if chosen is not None else None,
        paddr=chosen.paddr if chosen is not None else None,
        note_size=chosen.note_size if chosen is not None else None,
        text=text.text if text is not None else None,
        values=_values(text) if text is not None else {},
        key_values=key_values(text) if text is not None else None,
        warnings=text.warnings if text is not None else (),
        reason=disc.reason,
    )


def analyze(
    dump: Dump,
    *,
    addr_blob: bytes | None = None,
    fw_cfg_record: bytes | None = None,
    strategies: list[str] | None = None,
    rfc_offset: int = 40,
    vmgenid_blob: bytes | None = None,
    vmgenid: bool = True,
    progress: Callable[[int, int], None] | None = None,
    symbols: KernelSymbols | None = None,
    scan: str = "auto",
) -> AnalyzeResult:
    """Everything ``vmci analyze`` finds (``.to_dict()`` is what ``--json`` prints).

    ``kaslr`` compares the text's KASLR values with the vCPUs' page tables (:mod:`vmci.analysis.kaslr`);
    ``symbols`` (a System.map/vmlinux) adds exact symbol addresses to that section.  ``scan`` is the
    memory scan's mode (:data:`vmci.discover.strategy.SCAN_MODES`; ``"all"`` runs it exhaustively
    even when another strategy found a text).
    """
    disc = find_vmcoreinfo(dump, addr_blob=addr_blob, fw_cfg_record=fw_cfg_record, strategies=strategies,
                           rfc_offset=rfc_offset, progress=progress, scan=scan)
    checks = tuple(run_checks(dump, disc))
    chosen = disc.chosen
    return AnalyzeResult(
        dump=dump_summary(dump),
        vmcoreinfo=vmcoreinfo_section(disc),
        kaslr=KaslrDict(kaslr_section(dump, vmcoreinfo=chosen.text if chosen is not None else None,
                                      source=chosen.source if chosen is not None else None, symbols=symbols)),
        vmgenid=_vmgenid(dump, disc, vmgenid_blob) if vmgenid or vmgenid_blob is not None else None,
        checks=checks,
        status=worst(checks),
        provenance=_provenance(disc),
        candidates=tuple(_candidate(c, chosen) for f in disc.findings for c in f.candidates + f.rejected),
        panic=_panic(dump, chosen.text if chosen is not None else None),
    )


def _panic(dump: Dump, text: VmcoreInfo | None) -> PanicSummary | None:
    """The crash in the chosen kernel's log, read through its own page tables; None when the log
    holds no record or cannot be read (then ``analyze`` output is as before the log existed)."""
    if text is None:
        return None
    from vmci.kernel.printk.probe import certainly_empty
    from vmci.kernel.vmem import KernelMemory

    try:
        kmem = KernelMemory.from_dump(dump, text)
        if certainly_empty(kmem):  # two reads instead of loading the log readers
            return None
        from vmci.kernel.printk import get_printk_records

        log = get_printk_records(kmem)
    except VmciError:
        return None
    if not log.records:
        return None
    from vmci.analysis.kernel_log import panic_summary

    summary = panic_summary(log, crashtime=or_none(lambda: text.crashtime))
    return summary if summary.events else None


def _vmgenid(dump: Dump, disc: Discovery, blob: bytes | None) -> VmgenidResult | None:
    from vmci.analysis.vmgenid import find_vmgenid_in_dump

    acpi = disc.finding("acpi")
    rsdp = acpi.facts.get("rsdp") if acpi is not None else None
    found = find_vmgenid_in_dump(dump, addr_blob=blob, scan_all=False, rsdp_address=rsdp)
    return found if found.found else None
