"""Human output of the CLI, with rich.  Only the CLI imports this module."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from vmci.core.numbers import signed_hex

if TYPE_CHECKING:
    from vmci.analysis.kaslr import KaslrResult

MAX_ROWS = 40


def _console() -> Console:
    # piped output has no terminal width: do not cut addresses in tables at 80 columns
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


# facts whose integers are addresses, offsets or page numbers (hex); the rest are counts (decimal)
_HEX_WORDS = ("offset", "addr", "base", "start", "end", "pfn", "mapnr", "phys", "size", "paddr")


def _fmt(value: Any, key: str = "") -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and abs(value) > 4096 and any(w in key for w in _HEX_WORDS):
        return signed_hex(value, decimal=True)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v, k)}" for k, v in value.items() if v not in ("", None))
    if isinstance(value, list):
        return ", ".join(_fmt(v, key) for v in value) or "-"
    return str(value)


def render_info(s: dict[str, Any]) -> None:
    c = _console()
    c.print(f"[bold]{s['path']}[/]: {s['description']}")
    c.print(
        f"  format {s['format']}, arch {s['arch']}, {s['byte_order']}-endian, "
        f"{s['memory_size'] / (1 << 20):.1f} MiB of physical memory in {len(s['ranges'])} ranges"
    )
    t = Table("start", "end", "size", title="Physical memory", title_justify="left")
    for r in s["ranges"][:MAX_ROWS]:
        t.add_row(f"{r['start']:#x}", f"{r['start'] + r['size']:#x}", f"{r['size']:#x}")
    c.print(t)
    if len(s["ranges"]) > MAX_ROWS:
        c.print(f"  … {len(s['ranges']) - MAX_ROWS} more ranges (--json lists all)")
    if s["notes"]:
        t = Table("#", "name", "type", "size", "offset", "where", title="ELF notes", title_justify="left")
        for i, n in enumerate(s["notes"]):
            off = "-" if n["offset"] is None else f"{n['offset']:#x}"
            t.add_row(str(i), n["name"], str(n["type"]), str(n["size"]), off, n["where"])
        c.print(t)
    if s["cpus"] and s["arch"] == "aarch64":  # no control registers: pc, PSTATE and TTBR1 if saved
        t = Table("cpu", "pc", "sp", "pstate", "ttbr1_el1", title="CPUs", title_justify="left")
        for cpu in s["cpus"]:
            regs = cpu.get("regs", {})
            names = ("pc", "sp", "pstate", "ttbr1_el1")
            t.add_row(str(cpu.get("index")), *(_hex(regs.get(n)) for n in names))
        c.print(t)
    elif s["cpus"]:
        t = Table("cpu", "rip", "cr0", "cr3", "cr4", "idtr", title="CPUs", title_justify="left")
        for cpu in s["cpus"]:
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
    facts = {k: v for k, v in s["facts"].items() if k != "vmcoreinfo_text"}
    if facts:
        c.print("[bold]Header facts[/]")
        for k, v in facts.items():
            c.print(f"  {k}: {_fmt(v, k)}")
    for w in s["warnings"]:
        c.print(f"[yellow]warning:[/] {w}")


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


_STATUS_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red"}
_VERDICT_MARK = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]", "info": "    "}


def _addr(v: int | None) -> str:
    return "" if v is None else f" @{v:#x}"


def render_analysis(r: dict[str, Any]) -> None:
    """``vmci analyze``: format summary, provenance step by step, checks, key values."""
    from rich.markup import escape

    c = _console()
    d = r["dump"]
    c.print(f"[bold]{escape(d['path'])}[/]: {escape(d['description'])}, arch {d['arch']}, "
            f"{d['memory_size'] / (1 << 20):.1f} MiB in {len(d['ranges'])} range(s)")
    for w in d["warnings"][:8]:
        c.print(f"  [yellow]warning:[/] {escape(w)}")
    c.print("[bold]Provenance[/]")
    current = None
    for s in r["provenance"]:
        if s["strategy"] != current:
            current = s["strategy"]
            c.print(f"  [bold]{current}[/]")
        c.print(f"    {_VERDICT_MARK[s['verdict']]} {escape(s['action'])}{_addr(s['paddr'])}: "
                f"{escape(s['detail'])}")
    v = r["vmcoreinfo"]
    if v["found"]:
        c.print(f"[bold]VMCOREINFO[/] from [bold]{v['source']}[/]{_addr(v['paddr'])}: {escape(v['reason'])}")
        kv = v["key_values"]
        for key in ("OSRELEASE", "BUILD-ID", "PAGESIZE", "KERNELOFFSET", "phys_base", "CRASHTIME"):
            val = kv.get(key)
            if key == "KERNELOFFSET" and val is not None:
                shown = f"{val:#x}"
            elif key == "phys_base" and val is not None:
                shown = f"{val} ({val & ((1 << 64) - 1):#x})" if val < 0 else f"{val:#x}"
            else:
                shown = "-" if val is None else str(val)
            c.print(f"  {key:13s} {escape(shown)}")
    else:
        c.print(f"[bold red]VMCOREINFO not found[/]: {escape(v['reason'])}")
    if r["kaslr"].get("verdict") is not None:
        render_kaslr(r["kaslr"], c)
    if r.get("vmgenid"):
        g = r["vmgenid"]
        c.print(f"[bold]VM generation ID[/] {g['guid']} (GUID{_addr(g['paddr'])}, via {g['source']})")
    c.print("[bold]Checks[/]")
    for ch in r["checks"]:
        style = _STATUS_STYLE[ch["status"]]
        c.print(f"  [{style}]{ch['status']:4s}[/] {escape(ch['name'])}: {escape(ch['detail'])}")
    style = _STATUS_STYLE[r["status"]]
    c.print(f"Result: [{style}]{r['status']}[/]")


def _signed(v: int | None) -> str:
    return signed_hex(v, decimal=True)


def render_kaslr(result: KaslrResult | dict[str, Any], c: Console | None = None) -> None:
    """``vmci kaslr``: the answer, the two sources, the evidence (a :class:`KaslrResult`, or its
    JSON object as ``analyze`` holds it)."""
    from rich.markup import escape

    k = result if isinstance(result, dict) else result.to_dict()
    c = c or _console()
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
    for e in k.get("evidence", []):
        c.print(f"    {_VERDICT_MARK[e['verdict']]} {escape(e['action'])}: {escape(e['detail'])}")
    for w in k.get("warnings", []):
        c.print(f"  [yellow]warning:[/] {escape(w)}")
