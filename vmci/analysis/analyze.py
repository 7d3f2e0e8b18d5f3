"""``vmci analyze``: discovery, checks, KASLR values and the VM generation ID as one JSON-ready dict.

The shape is the versioned contract :data:`vmci.analysis.report.ANALYZE_SCHEMA` (schema 1): addresses
and offsets are integers, ``source`` is one of :data:`vmci.discover.finding.SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmci.analysis.checks import run_checks, worst
from vmci.analysis.kaslr import kaslr_section
from vmci.analysis.report import SCHEMA
from vmci.core.dump import Dump
from vmci.discover.finding import Candidate
from vmci.discover.run import Discovery, find_vmcoreinfo
from vmci.errors import VmciError
from vmci.kernel.symbols import KernelSymbols
from vmci.kernel.vmcoreinfo import VmcoreInfo

KEY_VALUES = ("OSRELEASE", "BUILD-ID", "PAGESIZE", "KERNELOFFSET", "NUMBER(phys_base)", "CRASHTIME")


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except VmciError:
        return None


def key_values(text: VmcoreInfo) -> dict[str, Any]:
    """The values the CLI shows, typed (numbers as integers; None when absent or malformed)."""
    pb = _safe(lambda: text.phys_base)
    return {
        "OSRELEASE": text.osrelease,
        "BUILD-ID": text.build_id,
        "PAGESIZE": _safe(lambda: text.pagesize),
        "KERNELOFFSET": _safe(lambda: text.kerneloffset),
        "phys_base": None if pb is None or pb.legacy_symbol else pb.value,
        "CRASHTIME": _safe(lambda: text.crashtime),
    }


def _values(text: VmcoreInfo) -> dict[str, str | None]:
    """Every key with its first value as written (the first line wins, as crash reads it)."""
    keys = text.keys()
    return {k: text.get(k) for k in keys}


def _candidate(c: Candidate, chosen: Candidate | None) -> dict[str, Any]:
    return {
        "source": c.source,
        "paddr": c.paddr,
        "note_size": c.note_size,
        "data_paddr": c.data_paddr,
        "valid": c.valid,
        "chosen": c is chosen,
        "osrelease": c.text.osrelease if c.text is not None else None,
        "text_size": len(c.text.raw) if c.text is not None else None,
        "facts": {k: v for k, v in c.facts.items() if isinstance(v, int | str | bool | type(None))},
    }


def _provenance(disc: Discovery) -> list[dict[str, Any]]:
    out = []

    def add(strategy: str, steps: Any) -> None:
        for s in steps:
            out.append({"strategy": strategy, **s.to_dict()})

    for f in disc.findings:
        chosen = f.chosen
        add(f.source, [s for s in f.evidence if s.action != "result"])
        for c in ([chosen] if chosen is not None else []) + f.rejected[:8]:
            add(f.source, c.evidence)
        add(f.source, [s for s in f.evidence if s.action == "result"])
    add("choice", disc.evidence)
    return out


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
) -> dict[str, Any]:
    """Everything ``vmci analyze --json`` prints (see :data:`vmci.analysis.report.ANALYZE_SCHEMA`).

    ``kaslr`` compares the text's KASLR values with the vCPUs' page tables (:mod:`vmci.analysis.kaslr`);
    ``symbols`` (a System.map/vmlinux) adds exact symbol addresses to that section.
    """
    disc = find_vmcoreinfo(dump, addr_blob=addr_blob, fw_cfg_record=fw_cfg_record, strategies=strategies,
                           rfc_offset=rfc_offset, progress=progress)
    checks = run_checks(dump, disc)
    chosen = disc.chosen
    text = chosen.text if chosen is not None else None
    kv = key_values(text) if text is not None else {}
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "dump": {
            "path": str(dump.path),
            "format": dump.format,
            "description": dump.description,
            "arch": dump.arch,
            "byte_order": dump.byte_order,
            "memory_size": dump.memory.size,
            "ranges": [{"start": r.start, "size": r.size} for r in dump.memory.ranges],
            "warnings": list(dump.warnings),
            **({"converted": c.to_dict()} if (c := getattr(dump.header, "converted", None)) else {}),
        },
        "vmcoreinfo": {
            "found": chosen is not None,
            "source": chosen.source if chosen is not None else None,
            "paddr": chosen.paddr if chosen is not None else None,
            "note_size": chosen.note_size if chosen is not None else None,
            "text": text.text if text is not None else None,
            "values": _values(text) if text is not None else {},
            "key_values": kv,
            "warnings": [w.to_dict() for w in text.warnings] if text is not None else [],
            "reason": disc.reason,
        },
        "kaslr": kaslr_section(dump, vmcoreinfo=text, source=chosen.source if chosen is not None else None,
                               symbols=symbols),
        "vmgenid": None,
        "checks": [c.to_dict() for c in checks],
        "status": worst(checks),
        "provenance": _provenance(disc),
        "candidates": [_candidate(c, chosen) for f in disc.findings for c in f.candidates + f.rejected],
    }
    if vmgenid or vmgenid_blob is not None:
        result["vmgenid"] = _vmgenid(dump, disc, vmgenid_blob)
    return result


def _vmgenid(dump: Dump, disc: Discovery, blob: bytes | None) -> dict[str, Any] | None:
    from vmci.analysis.vmgenid import find_vmgenid_in_dump

    acpi = disc.finding("acpi")
    rsdp = acpi.facts.get("rsdp") if acpi is not None else None
    found = find_vmgenid_in_dump(dump, addr_blob=blob, scan_all=False, rsdp_address=rsdp)
    return found.to_dict() if found.found else None
