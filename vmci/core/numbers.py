"""How numbers are shown to people: one signed-hex form for evidence text, the CLI and drgn."""

from __future__ import annotations


def signed_hex(value: int | None, *, decimal: bool = False, none: str = "-") -> str:
    """``0x1f`` / ``-0x1f`` (``phys_base`` is often negative); ``decimal`` appends `` (-31)`` to a
    negative value; ``None`` shows as ``none``."""
    if value is None:
        return none
    if value >= 0:
        return f"{value:#x}"
    return f"-{-value:#x} ({value})" if decimal else f"-{-value:#x}"


__all__ = ["signed_hex"]
