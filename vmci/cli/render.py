"""Human output of the typed results (:mod:`vmci.analysis.result`), with rich.

Used by the CLI and the drgn plugin; nothing below them imports it.  How a value is shown comes
from its field's declaration (``hex``, ``signed`` metadata), not from its name.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vmci.analysis.result import (
    U64,
    AnalyzeResult,
    CheckResult,
    DumpInfo,
    KaslrSection,
    KeyValues,
    ProvenanceStep,
    Status,
    VmcoreinfoSection,
    VmgenidResult,
)
from vmci.core.numbers import signed_hex

if TYPE_CHECKING:
    from vmci.analysis.kernel_log import PanicSummary
from vmci.core.record import field_meta

MAX_ROWS = 40
#: A hexadecimal fact at most this large is shown in decimal (small sizes read better so).
SMALL = 4096


def console() -> Console:
    # piped output has no terminal width: do not cut addresses in tables at 80 columns
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def _fmt(value: Any, hexed: bool = False, hex_keys: frozenset[str] = frozenset()) -> str:
    """A header fact: integers declared hexadecimal in hex (when large), nested facts as k=v."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and hexed and abs(value) > SMALL:
        return f"{value:#x}" if value >= 0 else f"-{-value:#x} ({value})"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v, k in hex_keys, hex_keys)}" for k, v in value.items()
                         if v not in ("", None))
    if isinstance(value, list):
        return ", ".join(_fmt(v, hexed, hex_keys) for v in value) or "-"
    return str(value)


def render_info(s: DumpInfo) -> None:
    """``vmci info``: the container, its memory ranges, notes, CPUs and header facts."""
    c = console()
    c.print(f"[bold]{s.path}[/]: {s.description}")
    c.print(
        f"  format {s.format}, arch {s.arch}, {s.byte_order}-endian, "
        f"{s.memory_size / (1 << 20):.1f} MiB of physical memory in {len(s.ranges)} ranges"
    )
    t = Table("start", "end", "size", title="Physical memory", title_justify="left")
    for r in s.ranges[:MAX_ROWS]:
        t.add_row(f"{r.start:#x}", f"{r.start + r.size:#x}", f"{r.size:#x}")
    c.print(t)
    if len(s.ranges) > MAX_ROWS:
        c.print(f"  … {len(s.ranges) - MAX_ROWS} more ranges (--json lists all)")
    if s.notes:
        t = Table("#", "name", "type", "size", "offset", "where", title="ELF notes", title_justify="left")
        for i, n in enumerate(s.notes):
            t.add_row(str(i), n.name, str(n.type), str(n.size), _hex(n.offset), n.where)
        c.print(t)
    if s.cpus and s.arch == "aarch64":  # no control registers: pc, PSTATE and TTBR1 if saved
        t = Table("cpu", "pc", "sp", "pstate", "ttbr1_el1", title="CPUs", title_justify="left")
        for cpu in s.cpus:
            regs = cpu.get("regs", {})
            names = ("pc", "sp", "pstate", "ttbr1_el1")
            t.add_row(str(cpu.get("index")), *(_hex(regs.get(n)) for n in names))
        c.print(t)
    elif s.cpus:
        t = Table("cpu", "rip", "cr0", "cr3", "cr4", "idtr", title="CPUs", title_justify="left")
        for cpu in s.cpus:
            regs = cpu.get("regs", {})
            t.add_row(
                str(cpu.get("index")),
                _hex(regs.get("rip")),
                _hex(cpu.get("cr0")),
                _hex(cpu.get("cr3")),
                _hex(cpu.get("cr4")),
                _hex(cpu.get("idt_base")),
            )
        c.print(t)
    hex_keys = field_meta(DumpInfo)["facts"]["hex_keys"]
    facts = {k: v for k, v in s.facts.items() if k != "vmcoreinfo_text"}
    if facts:
        c.print("[bold]Header facts[/]")
        for k, v in facts.items():
            c.print(f"  {k}: {_fmt(v, k in hex_keys, hex_keys)}")
    for w in s.warnings:
        c.print(f"[yellow]warning:[/] {w}")


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


_STATUS_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red"}
_VERDICT_MARK = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]", "info": "    "}


def _addr(v: int | None) -> str:
    return "" if v is None else f" @{v:#x}"


def _value(v: int | str | None, meta: Mapping[str, Any]) -> str:
    """A key value: hex fields in hex (signed ones with their two's complement), the rest as is."""
    if v is None:
        return "-"
    if isinstance(v, int) and meta.get("hex"):
        return f"{v} ({v & U64:#x})" if v < 0 and meta.get("signed") else f"{v:#x}"
    return str(v)


def render_provenance(steps: Iterable[ProvenanceStep], c: Console | None = None) -> None:
    """Every strategy's steps, strategy by strategy, then the choice."""
    c = c or console()
    c.print("[bold]Provenance[/]")
    current = None
    for s in steps:
        if s.strategy != current:
            current = s.strategy
            c.print(f"  [bold]{current}[/]")
        c.print(f"    {_VERDICT_MARK[s.verdict]} {escape(s.action)}{_addr(s.paddr)}: {escape(s.detail)}")


def render_vmcoreinfo(v: VmcoreinfoSection, c: Console | None = None) -> None:
    """Where the chosen text came from and why, and its key values."""
    c = c or console()
    if v.found and v.key_values is not None:
        c.print(f"[bold]VMCOREINFO[/] from [bold]{v.source}[/]{_addr(v.paddr)}: {escape(v.reason)}")
        for name, meta in field_meta(KeyValues).items():
            key = meta.get("key", name)
            c.print(f"  {key:13s} {escape(_value(getattr(v.key_values, name), meta))}")
    else:
        c.print(f"[bold red]VMCOREINFO not found[/]: {escape(v.reason)}")


def render_vmgenid(g: VmgenidResult, c: Console | None = None) -> None:
    c = c or console()
    c.print(f"[bold]VM generation ID[/] {g.guid} (GUID{_addr(g.paddr)}, via {g.source})")


def render_checks(checks: Iterable[CheckResult], status: Status, c: Console | None = None) -> None:
    """Each check's verdict, then the worst one."""
    c = c or console()
    c.print("[bold]Checks[/]")
    for ch in checks:
        style = _STATUS_STYLE[ch.status]
        c.print(f"  [{style}]{ch.status:4s}[/] {escape(ch.name)}: {escape(ch.detail)}")
    c.print(f"Result: [{_STATUS_STYLE[status]}]{status}[/]")


def render_analysis(r: AnalyzeResult) -> None:
    """``vmci analyze``: format summary, provenance step by step, key values, KASLR, checks."""
    c = console()
    d = r.dump
    c.print(f"[bold]{escape(d.path)}[/]: {escape(d.description)}, arch {d.arch}, "
            f"{d.memory_size / (1 << 20):.1f} MiB in {len(d.ranges)} range(s)")
    for w in d.warnings[:8]:
        c.print(f"  [yellow]warning:[/] {escape(w)}")
    render_provenance(r.provenance, c)
    render_vmcoreinfo(r.vmcoreinfo, c)
    kaslr = r.kaslr.to_dict()
    if kaslr.get("verdict") is not None:
        render_kaslr(kaslr, c)
    if r.vmgenid is not None:
        render_vmgenid(r.vmgenid, c)
    if r.panic is not None:
        render_panic(r.panic, c)
    render_checks(r.checks, r.status, c)


def render_panic(p: PanicSummary, c: Console | None = None) -> None:
    """The crash in the kernel log: the panic, the first event, taint, frames, uptime."""
    c = c or console()
    c.print(f"[bold]Panic[/] {escape(p.panic or p.first_event or '-')}")
    if p.first_event and p.first_event != p.panic:
        c.print(f"  first event: {escape(p.first_event)}")
    if p.taint is not None:
        flags = "; ".join(p.taint_flags)
        c.print(f"  taint: {escape(p.taint) or 'not tainted'}" + (f" ({escape(flags)})" if flags else ""))
    if p.frames:
        c.print(f"  call trace: {escape(' < '.join(p.frames[:8]))}")
    if p.uptime is not None:
        c.print(f"  uptime at the last record: {p.uptime:.6f} s"
                + (f"; CRASHTIME {p.crashtime}" if p.crashtime is not None else ""))


def _signed(v: int | None) -> str:
    return signed_hex(v, decimal=True)


def render_kaslr(section: Mapping[str, Any] | KaslrSection, c: Console | None = None) -> None:
    """``vmci kaslr``: the answer, the two sources, the evidence."""
    k = section if isinstance(section, Mapping) else section.to_dict()
    c = c or console()
    styles = {"agree": "green", "conflict": "bold red", "none": "red"}
    style = styles.get(k.get("verdict") or "none", "yellow")
    c.print(f"[bold]KASLR[/] KERNELOFFSET {_signed(k['kerneloffset'])}, phys_base {_signed(k['phys_base'])} "
            f"(method {k['method']}, verdict [{style}]{k.get('verdict')}[/])")
    v, pt = k.get("vmcoreinfo"), k.get("page_tables")
    if v:
        mark = " [yellow](SYNTHESIZED)[/]" if v.get("synthesized") else ""
        c.print(f"  VMCOREINFO ({escape(str(v.get('source')))}){mark}: "
                f"KERNELOFFSET {_signed(v['kerneloffset'])}, phys_base {_signed(v['phys_base'])}")
    if pt:
        c.print(f"  page tables: KERNELOFFSET {_signed(pt['kerneloffset'])}, "
                f"phys_base {_signed(pt['phys_base'])}; _text {pt['text_va']:#x} -> {pt['text_pa']:#x}, "
                + (f"{pt['va_bits']}-bit, {pt['page_size'] // 1024} KiB pages" if "va_bits" in pt
                   else f"{'5' if pt['la57'] else '4'}-level"))
    elif k.get("page_tables_error"):
        c.print(f"  page tables: {escape(k['page_tables_error'])}")
    for kern in k.get("kernels", []):  # a dump taken while a kdump capture kernel ran
        at = f" @{kern['paddr']:#x}" if kern.get("paddr") is not None else ""
        c.print(f"  {kern['role']} kernel {escape(str(kern['osrelease']))} ({escape(kern['source'])}{at}): "
                f"KERNELOFFSET {_signed(kern['kerneloffset'])}, phys_base {_signed(kern['phys_base'])}"
                + (", CRASHTIME " + str(kern["crashtime"]) if kern.get("crashtime") is not None else ""))
    for e in k.get("evidence", []):
        c.print(f"    {_VERDICT_MARK[e['verdict']]} {escape(e['action'])}: {escape(e['detail'])}")
    for w in k.get("warnings", []):
        c.print(f"  [yellow]warning:[/] {escape(w)}")
