"""Human output of the CLI, with rich.  Only the CLI imports this module."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

MAX_ROWS = 40


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and abs(value) > 4096:
        return f"{value:#x}" if value >= 0 else f"-{-value:#x} ({value})"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items() if v not in ("", None))
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) or "-"
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
    if s["cpus"]:
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
            c.print(f"  {k}: {_fmt(v)}")
    for w in s["warnings"]:
        c.print(f"[yellow]warning:[/] {w}")


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"
