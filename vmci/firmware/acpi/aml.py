"""AML, just enough to read the ``Name(XXXX, DWordConst)`` firmware patched with a blob address."""

from __future__ import annotations

from vmci.core.evidence import Evidence
from vmci.core.memory import PhysicalMemory
from vmci.errors import FormatError
from vmci.firmware.acpi.model import FAIL, OK, Rsdp, Table, add_step
from vmci.firmware.acpi.tables import find_ssdt
from vmci.layouts.acpi import (
    SDT_HEADER_SIZE,
)

# -- AML: just enough to read Name(XXXX, DWordConst) ---------------------------------------------

def decode_pkg_length(buf: bytes, off: int = 0) -> tuple[int, int]:
    """(value, number of PkgLength bytes) at ``buf[off]``."""
    if off >= len(buf):
        raise FormatError("PkgLength past end of AML", field="PkgLength", offset=off)
    lead = buf[off]
    follow = lead >> 6
    if follow == 0:
        return lead & 0x3F, 1
    if lead & 0x30 or off + 1 + follow > len(buf):
        raise FormatError("bad PkgLength lead byte or truncated", field="PkgLength", offset=off)
    value = lead & 0x0F
    for i in range(follow):
        value |= buf[off + 1 + i] << (4 + 8 * i)
    return value, 1 + follow


_NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"


def _seg(buf: bytes, off: int) -> str:
    seg = buf[off : off + 4]
    if len(seg) < 4 or not all(c in _NAME_CHARS for c in seg) or seg[:1].isdigit():
        raise FormatError(f"bad NameSeg {seg!r}", field="NameSeg", offset=off)
    return seg.decode("ascii")


def decode_name_string(buf: bytes, off: int = 0) -> tuple[str, int]:
    """(path, offset after it); segments are kept 4 characters long (``_SB_``)."""
    prefix = ""
    if off < len(buf) and buf[off] == 0x5C:
        prefix, off = "\\", off + 1
    else:
        while off < len(buf) and buf[off] == 0x5E:
            prefix, off = prefix + "^", off + 1
    if off >= len(buf):
        raise FormatError("NameString past end of AML", field="NameString", offset=off)
    op = buf[off]
    if op == 0x00:
        return prefix, off + 1
    if op == 0x2E:
        count, off = 2, off + 1
    elif op == 0x2F:
        if off + 1 >= len(buf):
            raise FormatError("truncated MultiNamePrefix", field="NameString", offset=off)
        count, off = buf[off + 1], off + 2
    else:
        count = 1
    segs = [_seg(buf, off + 4 * i) for i in range(count)]
    return prefix + ".".join(segs), off + 4 * count


_INT_SIZES = {0x0A: 1, 0x0B: 2, 0x0C: 4, 0x0E: 8}
INT_KINDS = {0x00: "Zero", 0x01: "One", 0xFF: "Ones", 0x0A: "ByteConst", 0x0B: "WordConst",
             0x0C: "DWordConst", 0x0E: "QWordConst"}


def decode_integer(buf: bytes, off: int = 0) -> tuple[int, str, int]:
    """(value, kind name, offset after it) of an integer data object at ``buf[off]``."""
    if off >= len(buf) or buf[off] not in INT_KINDS:
        found = f"{buf[off]:#04x}" if off < len(buf) else "end of AML"
        raise FormatError(f"expected an integer constant, found {found}", field="integer", offset=off)
    op = buf[off]
    if op == 0x00:
        return 0, "Zero", off + 1
    if op == 0x01:
        return 1, "One", off + 1
    if op == 0xFF:
        return (1 << 64) - 1, "Ones", off + 1
    size = _INT_SIZES[op]
    if off + 1 + size > len(buf):
        raise FormatError(f"truncated {INT_KINDS[op]}", field=INT_KINDS[op], offset=off)
    return int.from_bytes(buf[off + 1 : off + 1 + size], "little"), INT_KINDS[op], off + 1 + size


def parse_leading_name(aml: bytes) -> tuple[str, int, str, int]:
    """The ``Name`` at the start of ``aml``: (name, value, integer kind, offset of the value bytes)."""
    if not aml or aml[0] != 0x08:
        raise FormatError("AML does not start with a NameOp (0x08)", field="NameOp", offset=0)
    name, off = decode_name_string(aml, 1)
    value, kind, _ = decode_integer(aml, off)
    return name, value, kind, off + 1


def leading_name_dword(table: Table, name: str | None = None) -> tuple[int | None, Evidence]:
    """The value of the table's leading ``Name(XXXX, DWordConst)`` (``name`` checked if given)."""
    ev = Evidence()
    where = table.address + SDT_HEADER_SIZE
    try:
        found, value, kind, voff = parse_leading_name(table.aml)
    except FormatError as err:
        add_step(ev, where + (err.offset or 0), "leading Name(...) in AML", FAIL, str(err))
        return None, ev
    if name is not None and found != name:
        add_step(ev, where, f"leading Name is {name}", FAIL, f"found {found}")
        return None, ev
    if kind != "DWordConst":
        add_step(ev, where, f"{found} is a DWordConst", FAIL, f"found {kind} = {value:#x}")
        return None, ev
    add_step(ev, where + voff, f"Name({found}, DWordConst)", OK, f"{found} = {value:#x}")
    return value, ev


def find_named_dword(mem: PhysicalMemory, oem_table_id: str, name: str,
                     rsdp: Rsdp | None = None) -> tuple[int | None, Evidence]:
    """RSDP -> RSDT/XSDT -> SSDT(oem_table_id) -> leading Name(name, DWordConst): e.g. VCIA, VGIA."""
    table, ev = find_ssdt(mem, oem_table_id, rsdp)
    if table is None:
        return None, ev
    value, sub = leading_name_dword(table, name)
    ev.steps.extend(sub.steps)
    return value, ev


